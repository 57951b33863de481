"""`smtpconn oauth login` and `smtpconn oauth token` against the lab issuer (real HTTPS)."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest

from lab.oauth import LabClient, LabOAuthServer
from smtpconn.oauth.cache import read_cache
from tests.conftest import CliInvoker

SECRET = "lab-app-secret-not-to-print"
MAILBOX = "support@contoso.test"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_SECRET", SECRET)


def _profile(path: Path, oauth: str) -> Path:
    path.write_text(
        f"""version = 1

[[addresses]]
address = "{MAILBOX}"
mode = "outbound-only"

[addresses.outbound]
host = "smtp.office365.com"
username = "{MAILBOX}"

[addresses.outbound.oauth]
{oauth}
"""
    )
    return path


def _approve_when_asked(server: LabOAuthServer) -> threading.Thread:
    def approve() -> None:
        for _ in range(100):
            codes = server.pending_user_codes()
            if codes:
                server.approve(codes[0], MAILBOX)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=approve)
    thread.start()
    return thread


def test_login_stores_the_refresh_token_privately_and_prints_none(
    oauth_server: LabOAuthServer, ca_file: Path, cli: CliInvoker, tmp_path: Path
) -> None:
    oauth_server.add_client(LabClient("public-app"))
    cache = tmp_path / "cache" / "support.json"
    profile = _profile(
        tmp_path / "smtpconn.toml",
        f'provider = "generic"\nflow = "refresh-token"\nclient_id = "public-app"\n'
        f'token_cache = "{cache}"\ntoken_endpoint = "{oauth_server.token_endpoint}"\n'
        f'device_endpoint = "{oauth_server.device_endpoint}"\n',
    )
    approver = _approve_when_asked(oauth_server)
    result = cli("oauth", "login", MAILBOX, "--profile", str(profile), "--ca-file", str(ca_file))
    approver.join()
    assert result.exit_code == 0, result.output
    assert "enter the code" in result.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    stored = read_cache(cache)
    assert stored.account == MAILBOX
    assert stored.refresh_token not in result.output
    # The token it stands for now works: `oauth token` obtains one with it.
    shown = cli("oauth", "token", MAILBOX, "--json", "--profile", str(profile), "--ca-file",
                str(ca_file))  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["claims"]["sub"] == MAILBOX
    for token in oauth_server.state.access:
        assert token not in shown.output


def _ms_profile(server: LabOAuthServer, tmp_path: Path) -> Path:
    return _profile(
        tmp_path / "smtpconn.toml",
        f'provider = "microsoft365"\nflow = "client-credentials"\ntenant = "contoso.test"\n'
        f'client_id = "app"\nclient_secret = "env:LAB_SECRET"\n'
        f'token_endpoint = "{server.token_endpoint}"\n',
    )


def test_token_names_the_missing_role_and_its_fix(
    oauth_server: LabOAuthServer, ca_file: Path, cli: CliInvoker, tmp_path: Path
) -> None:
    oauth_server.add_client(
        LabClient("app", SECRET, roles=(), audience="https://outlook.office365.com")
    )
    profile = _ms_profile(oauth_server, tmp_path)
    result = cli("oauth", "token", MAILBOX, "--json", "-v", "--profile", str(profile),
                 "--ca-file", str(ca_file))  # fmt: skip
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["claims"]["aud"] == "https://outlook.office365.com"
    assert [m["what"] for m in document["missing"]] == ["the SMTP.SendAsApp application role"]
    assert "Add-MailboxPermission" in document["missing"][0]["fix"]
    assert "SmtpClientAuthenticationDisabled" in document["notes"][0]
    assert SECRET not in result.output
    for token in oauth_server.state.access:
        assert token not in result.output


def test_token_with_everything_granted_passes(
    oauth_server: LabOAuthServer, ca_file: Path, cli: CliInvoker, tmp_path: Path
) -> None:
    oauth_server.add_client(
        LabClient(
            "app", SECRET, roles=("SMTP.SendAsApp",), audience="https://outlook.office365.com"
        )
    )
    result = cli("oauth", "token", MAILBOX, "--profile", str(_ms_profile(oauth_server, tmp_path)),
                 "--ca-file", str(ca_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "roles: ['SMTP.SendAsApp']" in result.stdout


def test_token_endpoint_down_is_could_not_run(
    oauth_server: LabOAuthServer, ca_file: Path, cli: CliInvoker, tmp_path: Path
) -> None:
    profile = _ms_profile(oauth_server, tmp_path)
    oauth_server.stop()
    result = cli("oauth", "token", MAILBOX, "--profile", str(profile), "--ca-file", str(ca_file))
    assert result.exit_code == 3, result.output
    assert "cannot be reached" in result.stderr
    assert SECRET not in result.output


def test_wrong_secret_is_exit_2_with_the_fix(
    oauth_server: LabOAuthServer, ca_file: Path, cli: CliInvoker, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    oauth_server.add_client(LabClient("app", SECRET))
    monkeypatch.setenv("LAB_SECRET", "not-the-secret")
    result = cli("oauth", "token", MAILBOX, "--profile", str(_ms_profile(oauth_server, tmp_path)),
                 "--ca-file", str(ca_file))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "invalid_client" in result.stderr and "client secret" in result.stderr
    assert "not-the-secret" not in result.output
