"""verify's ``auth.token`` against the lab issuer, and ``auth.login`` logging in with that very
token through the lab's Postfix OAuth submission port (Dovecot introspects every token).

A token fit for SMTP passes both; a token for the wrong audience or without the SMTP role or
scope fails ``auth.token`` naming the step to take; a token endpoint that does not answer is
``error`` (we could not tell), never ``fail``; and no token or secret is ever printed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from lab.lab import Lab
from lab.oauth import SMTP_ROLE, LabClient, LabOAuthServer
from lab.proc import free_ports
from tests.conftest import CliInvoker

SECRET = "lab-verify-secret-do-not-print"
MICROSOFT_AUDIENCE = "https://outlook.office365.com"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_VERIFY_SECRET", SECRET)


def _profile(lab: Lab, path: Path, endpoint: str, provider: str = "generic") -> Path:
    # The lab's app-only tokens carry the SMTP role as their granted scope.
    scope = f'scope = "{SMTP_ROLE}"\n' if provider == "generic" else ""
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
provider = "{provider}"
flow = "client-credentials"
client_id = "relay-app"
client_secret = "env:LAB_VERIFY_SECRET"
token_endpoint = "{endpoint}"
{scope}"""
    )
    return path


def _verify(
    cli: CliInvoker, lab: Lab, profile: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    result = cli(
        "verify", "--only", "auth", "--json", "-v", *extra, "--profile", str(profile),
        "--resolver", lab.resolver, "--ca-file", str(lab.ca_file), "--timeout", "5",
    )  # fmt: skip
    checks = {c["id"]: c for c in json.loads(result.stdout)["addresses"][0]["checks"]}
    return result.exit_code, checks, result.output


def _nothing_secret(output: str, issuer: LabOAuthServer | None) -> None:
    assert SECRET not in output
    for token in issuer.state.access if issuer else ():
        assert token not in output
        assert token.split(".")[2] not in output  # not even the signature
        assert base64.b64encode(token.encode()).decode()[:40] not in output


def test_a_fit_token_passes_and_auth_login_uses_it(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("relay-app", SECRET, mailbox=lab.user.username))
    profile = _profile(lab, tmp_path / "smtpconn.toml", lab_issuer.token_endpoint)
    code, checks, output = _verify(cli, lab, profile)
    assert code == 0, output
    assert checks["auth.token"]["status"] == "pass", checks["auth.token"]
    assert checks["auth.login"]["status"] == "pass", checks["auth.login"]
    # One token: auth.login logged in with the token auth.token judged.
    assert lab_issuer.state.grants == ["client_credentials"]
    assert len(lab_issuer.state.access) == 1
    assert "None" not in checks["auth.login"]["detail"]
    assert "token" in checks["auth.login"]["detail"]
    # The ids are known to --only/--skip: skipping auth.token leaves auth.login.
    code, checks, output = _verify(cli, lab, profile, "--skip", "auth.token")
    assert "auth.token" not in checks and checks["auth.login"]["status"] == "pass", output
    _nothing_secret(output, lab_issuer)
    table = cli(
        "verify", "--only", "auth.token", "-v", "--profile", str(profile),
        "--resolver", lab.resolver, "--ca-file", str(lab.ca_file), "--timeout", "5",
    )  # fmt: skip
    assert table.exit_code == 0 and "auth.token" in table.stdout, table.output
    _nothing_secret(table.output, lab_issuer)


@pytest.mark.parametrize(
    ("client", "missing", "fix"),
    [
        (
            LabClient("relay-app", SECRET, audience="api://wrong-app", roles=("SMTP.SendAsApp",)),
            "Exchange Online audience",
            "https://outlook.office365.com/.default",
        ),
        (
            LabClient("relay-app", SECRET, audience=MICROSOFT_AUDIENCE, roles=()),
            "SMTP.SendAsApp",
            "New-ServicePrincipal",
        ),
    ],
    ids=["wrong-audience", "missing-role"],
)
def test_microsoft_token_that_smtp_would_refuse_fails_naming_the_step(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path,
    client: LabClient, missing: str, fix: str,
) -> None:  # fmt: skip
    """Provider microsoft365 with the token endpoint pointed at the lab issuer."""
    lab_issuer.add_client(client)
    profile = _profile(lab, tmp_path / "smtpconn.toml", lab_issuer.token_endpoint, "microsoft365")
    code, checks, output = _verify(cli, lab, profile)
    assert code == 1, output
    token = checks["auth.token"]
    assert token["status"] == "fail", token
    assert missing in token["summary"] and fix in token["fix"]
    _nothing_secret(output, lab_issuer)


def test_generic_token_without_the_smtp_scope_fails(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("relay-app", SECRET, roles=("Mail.Read",)))
    profile = _profile(lab, tmp_path / "smtpconn.toml", lab_issuer.token_endpoint)
    code, checks, output = _verify(cli, lab, profile)
    assert code == 1, output
    assert checks["auth.token"]["status"] == "fail"
    assert f"the scope {SMTP_ROLE}" in checks["auth.token"]["summary"]
    assert "grant the scope" in checks["auth.token"]["fix"]
    _nothing_secret(output, lab_issuer)


def test_an_expired_token_fails(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("relay-app", SECRET, mailbox=lab.user.username))
    lab_issuer.state.lifetime = 0
    profile = _profile(lab, tmp_path / "smtpconn.toml", lab_issuer.token_endpoint)
    code, checks, output = _verify(cli, lab, profile)
    assert code == 1, output
    assert checks["auth.token"]["status"] == "fail"
    assert "expired" in checks["auth.token"]["summary"]
    _nothing_secret(output, lab_issuer)


def test_wrong_client_secret_fails_with_the_fix(
    lab: Lab, lab_issuer: LabOAuthServer, cli: CliInvoker, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("relay-app", "another-secret", mailbox=lab.user.username))
    profile = _profile(lab, tmp_path / "smtpconn.toml", lab_issuer.token_endpoint)
    code, checks, output = _verify(cli, lab, profile)
    assert code == 1, output
    assert checks["auth.token"]["status"] == "fail"
    assert "invalid_client" in checks["auth.token"]["summary"]
    assert "client secret" in checks["auth.token"]["fix"]
    assert checks["auth.login"]["status"] == "skip"
    _nothing_secret(output, lab_issuer)


def test_token_endpoint_down_is_error_not_fail(lab: Lab, cli: CliInvoker, tmp_path: Path) -> None:
    nobody = f"https://127.0.0.1:{free_ports(1)[0]}/token"
    profile = _profile(lab, tmp_path / "smtpconn.toml", nobody)
    code, checks, output = _verify(cli, lab, profile)
    # Never a failure (exit 1): the other checks passed, this one could not tell.
    assert code == 0, output
    assert checks["auth.token"]["status"] == "error", checks["auth.token"]
    assert "could not tell" in checks["auth.token"]["summary"]
    assert checks["auth.login"]["status"] == "skip"
    _nothing_secret(output, None)


def test_password_login_skips_auth_token(
    lab: Lab, cli: CliInvoker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_PASSWORD", lab.user.password)
    profile = tmp_path / "smtpconn.toml"
    profile.write_text(
        f"""version = 1

[[addresses]]
address = "support@good.test"
mode = "outbound-only"

[addresses.outbound]
host = "{lab.server_name}"
port = {lab.ports["submission"]}
username = "{lab.user.username}"
secret = "env:LAB_PASSWORD"
"""
    )
    code, checks, output = _verify(cli, lab, profile)
    assert code == 0, output
    assert checks["auth.token"]["status"] == "skip"
    assert checks["auth.login"]["status"] == "pass"
    assert lab.user.password not in output
