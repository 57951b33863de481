"""send-test with an OAuth token source, through the lab's real Postfix submission port whose
Dovecot checks every XOAUTH2 token against the lab issuer (introspection): the token the
library obtains is the one the server accepts, and none of it reaches the output."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lab.lab import Lab
from lab.oauth import LabClient, LabOAuthServer
from tests.conftest import CliInvoker

CLIENT_SECRET = "lab-app-secret-do-not-print"
RECIPIENT = "bob@good.test"


def _profile(lab: Lab, issuer: LabOAuthServer, path: Path) -> Path:
    path.write_text(
        f"""version = 1

[[addresses]]
address = "support@good.test"
mode = "outbound-only"

[addresses.outbound]
host = "{lab.server_name}"
port = {lab.ports["oauth_submission"]}
username = "{lab.user.username}"

[addresses.outbound.oauth]
provider = "generic"
flow = "client-credentials"
client_id = "relay-app"
client_secret = "env:LAB_OAUTH_SECRET"
token_endpoint = "{issuer.token_endpoint}"
scope = "smtp"
"""
    )
    return path


def _send(cli: CliInvoker, lab: Lab, profile: Path):  # type: ignore[no-untyped-def]
    return cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--json", "-v",
        "--profile", str(profile), "--resolver", lab.resolver, "--ca-file", str(lab.ca_file),
        "--timeout", "10",
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_OAUTH_SECRET", CLIENT_SECRET)


def _no_secret_in(text: str, issuer: LabOAuthServer) -> None:
    assert CLIENT_SECRET not in text
    for token in issuer.state.access:
        assert token not in text
        assert base64.b64encode(token.encode()).decode()[:40] not in text


def test_send_test_logs_in_with_a_client_credentials_token(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("relay-app", CLIENT_SECRET, mailbox=lab.user.username))
    result = _send(cli, lab, _profile(lab, lab_issuer, tmp_path / "smtpconn.toml"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert lab.find_message(report["token"], RECIPIENT)
    assert lab_issuer.state.grants == ["client_credentials"]
    assert lab_issuer.state.introspections >= 1  # the server really asked the issuer
    _no_secret_in(result.output, lab_issuer)


def test_a_token_without_mailbox_permission_is_refused_by_the_server(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    """The app has a token but no right to the mailbox (Exchange's Add-MailboxPermission step):
    the server refuses AUTH; nothing is delivered."""
    lab_issuer.add_client(LabClient("relay-app", CLIENT_SECRET))
    result = _send(cli, lab, _profile(lab, lab_issuer, tmp_path / "smtpconn.toml"))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    auth = [s for s in report["stages"] if s["stage"] == "auth"]
    assert auth and not auth[0]["ok"]
    assert lab_issuer.state.introspections >= 1
    _no_secret_in(result.output, lab_issuer)


def test_send_test_logs_in_with_oauthbearer_when_the_profile_says_so(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    """RFC 7628 against Dovecot's OAUTHBEARER (the lab port offers XOAUTH2 too: the profile's
    choice wins); the token reaches the server only inside the GS2 framing, never the output."""
    lab_issuer.add_client(LabClient("relay-app", CLIENT_SECRET, mailbox=lab.user.username))
    profile = _profile(lab, lab_issuer, tmp_path / "smtpconn.toml")
    text = profile.read_text().replace(
        f'username = "{lab.user.username}"',
        f'username = "{lab.user.username}"\nauth = "oauthbearer"',
    )
    profile.write_text(text)
    result = _send(cli, lab, profile)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert lab.find_message(report["token"], RECIPIENT)
    assert "AUTH OAUTHBEARER <redacted>" in result.output
    assert "AUTH XOAUTH2 <redacted>" not in result.output
    assert lab_issuer.state.introspections >= 1
    _no_secret_in(result.output, lab_issuer)


def test_oauthbearer_with_a_token_the_server_refuses(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    """No mailbox permission: Dovecot answers the RFC 7628 error challenge, the client ends the
    exchange with ^A, and send-test reports the refusal at the auth stage."""
    lab_issuer.add_client(LabClient("relay-app", CLIENT_SECRET))
    profile = _profile(lab, lab_issuer, tmp_path / "smtpconn.toml")
    profile.write_text(
        profile.read_text().replace(
            f'username = "{lab.user.username}"',
            f'username = "{lab.user.username}"\nauth = "oauthbearer"',
        )
    )
    result = _send(cli, lab, profile)
    assert result.exit_code == 1, result.output
    auth = [s for s in json.loads(result.stdout)["stages"] if s["stage"] == "auth"]
    assert auth and not auth[0]["ok"]
    _no_secret_in(result.output, lab_issuer)
