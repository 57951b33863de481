"""``smtpconn export`` of addresses with OAuth token sources: every field of the token source
(provider, flow, tenant, client id, secret and key references, token cache, endpoints, scope,
OAUTHBEARER) is written, so that importing the export recreates the same profile; no secret or
the text "None" in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtpconn.profile.store import load_profile
from tests.conftest import CliInvoker

CLIENT_SECRET = "oauth-client-secret-never-exported"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M365_SECRET", CLIENT_SECRET)


def _key_file(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(json.dumps({"client_email": "sa@p.iam.test", "private_key": pem}))
    path.chmod(0o600)
    return path


def _add(cli: CliInvoker, address: str, *options: str) -> None:
    result = cli("add-address", address, "--mode", "outbound-only", "--username", address, *options)
    assert result.exit_code == 0, result.output


def _seed(cli: CliInvoker, workdir: Path) -> None:
    secret_file = workdir / "google-secret"
    secret_file.write_text("x")
    secret_file.chmod(0o600)
    _add(
        cli, "ms@contoso.test", "--provider", "microsoft365", "--oauth-flow", "client-credentials",
        "--oauth-tenant", "contoso.onmicrosoft.com", "--oauth-client-id", "app-1",
        "--oauth-client-secret", "env:M365_SECRET",
    )  # fmt: skip
    _add(
        cli, "user@example.test", "--provider", "google", "--oauth-flow", "refresh-token",
        "--oauth-client-id", "tv-client", "--oauth-client-secret", f"file:{secret_file}",
        "--oauth-token-cache", str(workdir / "cache" / "user.json"),
    )  # fmt: skip
    _add(
        cli, "sa@example.test", "--provider", "google", "--oauth-flow", "service-account",
        "--oauth-key", f"file:{_key_file(workdir / 'sa.json')}",
    )  # fmt: skip
    _add(
        cli, "other@example.test", "--provider", "generic", "--server", "mail.example.test:587",
        "--auth", "oauthbearer", "--oauth-flow", "refresh-token", "--oauth-client-id", "c",
        "--oauth-token-cache", str(workdir / "cache" / "other.json"),
        "--oauth-token-endpoint", "https://idp.example.test/token",
        "--oauth-device-endpoint", "https://idp.example.test/device",
        "--oauth-scope", "smtp offline_access",
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_oauth_addresses_export_and_reimport_identically(
    cli: CliInvoker, workdir: Path, fmt: str
) -> None:
    _seed(cli, workdir)
    exported = cli("export", "--format", fmt)
    assert exported.exit_code == 0, exported.output
    assert CLIENT_SECRET not in exported.stdout and "None" not in exported.stdout
    for reference in ("env:M365_SECRET", "file:", "contoso.onmicrosoft.com", "smtp offline_access"):
        assert reference in exported.stdout
    dump = workdir / f"dump.{fmt}"
    dump.write_text(exported.stdout)
    other = workdir / "other.toml"
    result = cli("--profile", str(other), "import", str(dump))
    assert result.exit_code == 0, result.output
    assert (
        load_profile(other).profile.addresses
        == load_profile(workdir / "smtpconn.toml").profile.addresses
    )
    assert cli("--profile", str(other), "export", "--format", fmt).stdout == exported.stdout


def test_jsonl_export_names_the_oauth_fields(cli: CliInvoker, workdir: Path) -> None:
    _seed(cli, workdir)
    rows = [json.loads(line) for line in cli("export", "--format", "jsonl").stdout.splitlines()]
    ms = next(r for r in rows if r["address"] == "ms@contoso.test")
    assert "secret" not in ms
    assert ms == {
        "address": "ms@contoso.test",
        "mode": "outbound-only",
        "workflow": "authenticated",
        "server": "smtp.office365.com:587",
        "username": "ms@contoso.test",
        "security": "starttls",
        "auth": "xoauth2",
        "provider": "microsoft365",
        "oauth_flow": "client-credentials",
        "oauth_tenant": "contoso.onmicrosoft.com",
        "oauth_client_id": "app-1",
        "oauth_client_secret": "env:M365_SECRET",
        # Microsoft 365's published sending limits, filled by the provider (issue 15 item 1).
        "max_connections": 3,
        "messages_per_minute": 30,
        "recipients_per_day": 10000,
    }
    other = next(r for r in rows if r["address"] == "other@example.test")
    assert other["auth"] == "oauthbearer"
    assert other["oauth_token_endpoint"] == "https://idp.example.test/token"
    assert other["oauth_token_cache"] == str(workdir / "cache" / "other.json")
