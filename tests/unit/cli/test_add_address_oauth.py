"""add-address with an OAuth2 token source: what the profile stores, and bad input refused
(exit 2, the profile byte-identical, no secret echoed)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from smtpconn.profile.store import load_profile
from tests.conftest import CliInvoker

CLIENT_SECRET = "cl13nt-s3cr3t-never-written"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M365_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", "pw")


def _ms_client_credentials(cli: CliInvoker, *extra: str):  # type: ignore[no-untyped-def]
    return cli(
        "add-address",
        "support@contoso.test",
        "--mode",
        "outbound-only",
        "--username",
        "support@contoso.test",
        "--provider",
        "microsoft365",
        "--oauth-flow",
        "client-credentials",
        "--oauth-tenant",
        "contoso.onmicrosoft.com",
        "--oauth-client-id",
        "11111111-2222-3333-4444-555555555555",
        "--oauth-client-secret",
        "env:M365_SECRET",
        *extra,
    )


def test_microsoft_client_credentials_fill_the_server_preset_and_store_references_only(
    cli: CliInvoker, workdir: Path
) -> None:
    result = _ms_client_credentials(cli, "--json")
    assert result.exit_code == 0, result.output
    text = (workdir / "smtpconn.toml").read_text()
    assert CLIENT_SECRET not in text and CLIENT_SECRET not in result.output
    outbound = tomllib.loads(text)["addresses"][0]["outbound"]
    assert outbound == {
        "host": "smtp.office365.com",
        "port": 587,
        "security": "starttls",
        "auth": "xoauth2",
        "username": "support@contoso.test",
        "oauth": {
            "provider": "microsoft365",
            "flow": "client-credentials",
            "tenant": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "env:M365_SECRET",
        },
        # Microsoft 365's published sending limits (Exchange Online), filled by the provider.
        "limits": {"max_connections": 3, "messages_per_minute": 30, "recipients_per_day": 10000},
    }
    loaded = load_profile(workdir / "smtpconn.toml").profile.addresses[0].outbound
    assert loaded is not None and loaded.oauth is not None and loaded.secret is None
    assert loaded.oauth.effective_token_endpoint == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert loaded.oauth.effective_scope == "https://outlook.office365.com/.default"


def test_google_refresh_token_with_explicit_server_and_cache(
    cli: CliInvoker, workdir: Path
) -> None:
    result = cli(
        "add-address",
        "help@example.test",
        "--mode",
        "outbound-only",
        "--server",
        "smtp.gmail.com",
        "--username",
        "help@example.test",
        "--oauth-flow",
        "refresh-token",
        "--oauth-client-id",
        "abc.apps.googleusercontent.com",
        "--oauth-client-secret",
        "env:M365_SECRET",
        "--oauth-token-cache",
        "tokens/help.json",
    )
    assert result.exit_code == 0, result.output
    assert "smtpconn oauth login" in result.stderr  # no refresh token yet: say how to get one
    oauth = tomllib.loads((workdir / "smtpconn.toml").read_text())["addresses"][0]["outbound"][
        "oauth"
    ]
    assert oauth["provider"] == "google"  # auto: smtp.gmail.com is Google's
    assert oauth["token_cache"] == str(workdir / "tokens" / "help.json")


BAD_INPUT = [
    (("--provider", "yahoo"), "--provider 'yahoo' is not valid"),
    (("--oauth-tenant", ""), "--oauth-tenant is required for microsoft365"),
    (("--oauth-client-secret", CLIENT_SECRET), "must be a reference"),
    (("--oauth-flow", "service-account"), "service-account is not offered by microsoft365"),
    (("--oauth-flow", "password"), "--oauth-flow 'password' is not valid"),
    (("--secret", "env:SMTP_PASSWORD"), "--secret and --oauth-flow exclude each other"),
    (("--auth", "plain"), "--auth plain cannot log in with an OAuth token"),
    (("--oauth-token-endpoint", "http://login.test/token"), "is not an https:// URL"),
    (("--oauth-token-cache", "x.json"), "--oauth-token-cache only applies to the refresh-token"),
]


@pytest.mark.parametrize(("change", "expected"), BAD_INPUT)
def test_bad_oauth_input_exits_2_and_leaves_the_profile_byte_identical(
    cli: CliInvoker, workdir: Path, change: tuple[str, str], expected: str
) -> None:
    assert cli(
        "add-address", "other@example.com", "--mode", "outbound-only", "--server",
        "mail.example.com", "--username", "u", "--secret", "env:SMTP_PASSWORD",
    ).exit_code == 0  # fmt: skip
    before = (workdir / "smtpconn.toml").read_bytes()
    result = _ms_client_credentials(cli, *change)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert CLIENT_SECRET not in result.output
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_bad_input_in_json_mode_is_an_error_document(cli: CliInvoker, workdir: Path) -> None:
    result = _ms_client_credentials(cli, "--json", "--oauth-client-secret", CLIENT_SECRET)
    assert result.exit_code == 2
    assert "must be a reference" in json.loads(result.stdout)["error"]["message"]
    assert CLIENT_SECRET not in result.output
    assert not (workdir / "smtpconn.toml").exists()


def test_service_account_key_must_be_a_private_key_file(cli: CliInvoker, workdir: Path) -> None:
    key = workdir / "sa.json"
    key.write_text('{"client_email": "sa@p.iam.gserviceaccount.com"}')
    key.chmod(0o600)
    args = ["add-address", "help@example.test", "--mode", "outbound-only", "--username",
            "help@example.test", "--provider", "google", "--oauth-flow", "service-account"]  # fmt: skip
    result = cli(*args, "--oauth-key", f"file:{key}")
    assert result.exit_code == 2 and "not a service-account key file" in result.stderr
    key.write_text('{"client_email": "sa@p.iam.gserviceaccount.com", "private_key": "PEM"}')
    key.chmod(0o644)
    result = cli(*args, "--oauth-key", f"file:{key}")
    assert result.exit_code == 2 and "readable by group or others" in result.stderr
    key.chmod(0o600)
    result = cli(*args, "--oauth-key", f"file:{key}")
    assert result.exit_code == 0, result.output
    oauth = tomllib.loads((workdir / "smtpconn.toml").read_text())["addresses"][0]["outbound"][
        "oauth"
    ]
    assert oauth == {"provider": "google", "flow": "service-account", "key": f"file:{key}"}
