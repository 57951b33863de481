"""TLS and AUTH checks against the lab's real Postfix: each bad port gives its own finding."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.lab import Lab
from smtpconn.addresses import parse_address
from smtpconn.checks.catalogue import TLS_AUTH
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.tls_auth import run_tls_auth
from smtpconn.dns import CachingResolver
from smtpconn.dns.resolvers import make_resolver, parse_resolver
from smtpconn.profile.model import (
    AuthMechanism,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef
from smtpconn.settings import Settings

SECRET_ENV = "SMTPCONN_TEST_TLS_AUTH_SECRET"


def _entry(
    lab: Lab,
    port_name: str,
    *,
    security: Security = Security.STARTTLS,
    auth: AuthMechanism = AuthMechanism.AUTO,
    host: str | None = None,
) -> SupportAddress:
    return SupportAddress(
        address=parse_address("support@good.test"),
        mode=Mode.BIDIRECTIONAL,
        workflow=Workflow.AUTHENTICATED,
        outbound=OutboundServer(
            host=host or lab.server_name,
            port=lab.ports[port_name] if port_name in lab.ports else int(port_name),
            security=security,
            auth=auth,
            username=lab.user.username,
            secret=SecretRef("env", SECRET_ENV),
        ),
    )


async def _run(
    lab: Lab, entry: SupportAddress, *, insecure: bool = False, ca: Path | None = None
) -> tuple[dict[str, CheckResult], list[str]]:
    settings = Settings(
        resolvers=(parse_resolver(lab.resolver),),
        ca_file=ca if ca is not None else lab.ca_file,
        timeout=5,
        insecure=insecure,
    )
    transcript: list[str] = []
    ctx = CheckContext(
        settings=settings,
        base_dir=Path("."),
        resolver=CachingResolver(make_resolver(settings.resolvers, timeout=5)),
        transcript=transcript.append,
    )
    results = await run_tls_auth(ctx, entry)
    by_id = {r.id: r for r in results}
    assert len(by_id) == len(results) == len(TLS_AUTH)
    for r in results:
        if r.status not in (Status.PASS, Status.SKIP):
            assert r.fix, f"{r.id} {r.status} has no fix"
    return by_id, transcript


def _assert_no_secret(lab: Lab, results: dict[str, CheckResult], transcript: list[str]) -> None:
    import base64

    password = lab.user.password
    encoded = base64.b64encode(f"\0{lab.user.username}\0{password}".encode()).decode()
    everything = "\n".join(transcript) + repr(list(results.values()))
    assert password not in everything
    assert encoded not in everything
    assert base64.b64encode(password.encode()).decode() not in everything


@pytest.fixture
def secret(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, lab.user.password)
    return lab.user.password


def _status(results: dict[str, CheckResult]) -> dict[str, str]:
    return {k: v.status.value for k, v in results.items()}


async def test_submission_passes(lab: Lab, secret: str) -> None:
    results, transcript = await _run(lab, _entry(lab, "submission"))
    # A password login: auth.token has nothing to judge.
    assert results.pop("auth.token").status is Status.SKIP
    assert all(r.status is Status.PASS for r in results.values()), _status(results)
    assert "TLSv1." in results["tls.version"].summary
    assert any("AUTH PLAIN <redacted>" in line for line in transcript)
    _assert_no_secret(lab, results, transcript)


async def test_smtps_passes(lab: Lab, secret: str) -> None:
    results, transcript = await _run(lab, _entry(lab, "smtps", security=Security.TLS))
    # A password login: auth.token has nothing to judge.
    assert results.pop("auth.token").status is Status.SKIP
    assert all(r.status is Status.PASS for r in results.values()), _status(results)
    assert "implicit TLS" in results["tls.starttls"].summary
    _assert_no_secret(lab, results, transcript)


async def test_no_starttls_fails_and_never_sends_auth(lab: Lab, secret: str) -> None:
    results, transcript = await _run(lab, _entry(lab, "no_starttls"))
    assert results["tls.starttls"].status is Status.FAIL
    assert "strips" in results["tls.starttls"].detail
    assert results["auth.before-tls"].status is Status.FAIL
    assert results["auth.login"].status is Status.SKIP
    assert not any(
        line.startswith("C: AUTH") for line in (line.split("] ", 1)[1] for line in transcript)
    )
    _assert_no_secret(lab, results, transcript)


async def test_auth_before_tls_is_a_finding_with_the_fix(lab: Lab, secret: str) -> None:
    results, transcript = await _run(lab, _entry(lab, "auth_before_tls"))
    before = results["auth.before-tls"]
    assert before.status is Status.FAIL
    assert "smtpd_tls_auth_only = yes" in before.fix
    # everything else is fine on that port, and the login happened only after TLS
    assert results["tls.starttls"].status is Status.PASS
    assert results["auth.login"].status is Status.PASS
    commands = [line.split("] ", 1)[1] for line in transcript]
    assert commands.index("C: STARTTLS") < next(
        i for i, c in enumerate(commands) if c.startswith("C: AUTH")
    )
    _assert_no_secret(lab, results, transcript)


async def test_expired_certificate(lab: Lab, secret: str) -> None:
    results, transcript = await _run(lab, _entry(lab, "expired"))
    assert results["tls.certificate"].status is Status.FAIL
    assert results["tls.certificate"].summary.startswith("expired on")
    assert results["tls.expiry"].status is Status.FAIL
    assert results["tls.hostname"].status is Status.PASS
    assert results["auth.login"].status is Status.SKIP
    assert results["auth.mechanisms"].status is Status.PASS  # learnt over the lenient session
    assert not any("AUTH" in line.split("] ", 1)[1][:8] for line in transcript)
    _assert_no_secret(lab, results, transcript)


async def test_expiring_certificate_warns_with_the_date(lab: Lab, secret: str) -> None:
    results, _ = await _run(lab, _entry(lab, "expiring"))
    assert results["tls.expiry"].status is Status.WARN
    assert "expires in" in results["tls.expiry"].summary
    assert results["tls.certificate"].status is Status.PASS


async def test_wrong_host(lab: Lab, secret: str) -> None:
    results, _ = await _run(lab, _entry(lab, "wrong_host"))
    assert results["tls.hostname"].status is Status.FAIL
    assert "wrong-host.example.test" in results["tls.hostname"].summary
    assert results["tls.certificate"].status is Status.PASS  # the chain itself is fine
    assert results["auth.login"].status is Status.SKIP


async def test_untrusted_ca(lab: Lab, secret: str) -> None:
    results, _ = await _run(lab, _entry(lab, "untrusted"))
    cert = results["tls.certificate"]
    assert cert.status is Status.FAIL
    assert cert.summary.startswith("untrusted issuer")
    assert "--ca-file" in cert.fix
    assert results["tls.hostname"].status is Status.PASS
    assert results["auth.login"].status is Status.SKIP


async def test_insecure_skips_certificate_checks_loudly(lab: Lab, secret: str) -> None:
    results, transcript = await _run(lab, _entry(lab, "untrusted"), insecure=True)
    assert results["tls.certificate"].status is Status.WARN
    assert "--insecure" in results["tls.certificate"].summary
    assert all("INSECURE" in r.summary for k, r in results.items() if k.startswith("tls."))
    assert results["auth.login"].status is Status.PASS
    _assert_no_secret(lab, results, transcript)


async def test_wrong_password_fails_auth_login(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "definitely-wrong-password")
    results, transcript = await _run(lab, _entry(lab, "submission"))
    login = results["auth.login"]
    assert login.status is Status.FAIL
    assert "535" in login.detail
    assert "definitely-wrong-password" not in "\n".join(transcript) + repr(results)


async def test_missing_secret_is_an_error(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    results, _ = await _run(lab, _entry(lab, "submission"))
    assert results["auth.login"].status is Status.ERROR
    assert SECRET_ENV in results["auth.login"].summary + results["auth.login"].fix


async def test_configured_xoauth2_not_offered(lab: Lab, secret: str) -> None:
    results, _ = await _run(lab, _entry(lab, "submission", auth=AuthMechanism.XOAUTH2))
    assert results["auth.mechanisms"].status is Status.FAIL
    assert "XOAUTH2" in results["auth.mechanisms"].summary


async def test_closed_port_is_an_error(lab: Lab, secret: str) -> None:
    from lab.proc import free_ports

    port = free_ports(1)[0]
    results, _ = await _run(lab, _entry(lab, str(port)))
    assert results["tls.connect"].status is Status.ERROR
    assert "refused" in results["tls.connect"].summary
    assert all(r.status is Status.SKIP for k, r in results.items() if k != "tls.connect")


async def test_implicit_tls_against_a_starttls_port_is_explained(lab: Lab, secret: str) -> None:
    results, _ = await _run(lab, _entry(lab, "submission", security=Security.TLS))
    assert results["tls.connect"].status is Status.FAIL
    assert "starttls" in results["tls.connect"].fix
