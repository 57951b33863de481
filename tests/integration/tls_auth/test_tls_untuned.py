"""TLS/AUTH against servers no other test was tuned to, since checks that pass only the servers they
were written against prove nothing: a small asyncio SMTP server (tiny_smtp) that breaks the handshake after offering STARTTLS, greets with 421 or
554, offers only XOAUTH2, or serves a self-signed or not-yet-valid certificate. Each case must
get its own finding, status and fix, and no credential may ever be sent in clear text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lab.lab import Lab
from smtpconn.addresses import parse_address
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
from tests.integration.tls_auth.tiny_smtp import Behaviour, TinySmtp, make_cert, tiny_smtp

SECRET_ENV = "SMTPCONN_TEST_TLS_UNTUNED_SECRET"
SECRET = "untuned-secret-0815"


@pytest.fixture(scope="module")
def certs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    assert lab.ca is not None
    d = tmp_path_factory.mktemp("certs")
    ca = (lab.ca.ca_cert, lab.ca.ca_key)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    return {
        "good": make_cert(d, "good", lab.server_name, issuer=ca),
        "self": make_cert(d, "self", lab.server_name),
        "future": make_cert(d, "future", lab.server_name, issuer=ca, not_before=later),
    }


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


async def _verify(lab: Lab, server: TinySmtp) -> dict[str, CheckResult]:
    settings = Settings(resolvers=(parse_resolver(lab.resolver),), ca_file=lab.ca_file, timeout=5)
    transcript: list[str] = []
    ctx = CheckContext(
        settings=settings,
        base_dir=Path("."),
        resolver=CachingResolver(make_resolver(settings.resolvers, timeout=5)),
        transcript=transcript.append,
    )
    entry = SupportAddress(
        parse_address("support@good.test"),
        Mode.OUTBOUND_ONLY,
        Workflow.AUTHENTICATED,
        OutboundServer(
            lab.server_name,
            server.port,
            Security.STARTTLS,
            AuthMechanism.AUTO,
            "support",
            SecretRef("env", SECRET_ENV),
        ),
    )
    results = {r.id: r for r in await run_tls_auth(ctx, entry)}
    for result in results.values():
        if result.status is not Status.PASS:
            assert result.fix, f"{result.id} {result.status} has no fix"
        assert SECRET not in f"{result.summary} {result.detail} {result.fix}"
    assert SECRET not in "\n".join(transcript)
    # Whatever the server did, nothing secret went out before TLS.
    assert not [line for line in server.received if line.startswith("CLEAR AUTH")]
    return results


def _statuses(results: dict[str, CheckResult]) -> dict[str, str]:
    return {i: r.status.value for i, r in results.items() if r.status is not Status.SKIP}


@pytest.mark.parametrize("how", ["garbage", "close"])
async def test_starttls_offered_then_the_handshake_fails(lab: Lab, how: str) -> None:
    with tiny_smtp(Behaviour(starttls=how)) as server:
        results = await _verify(lab, server)
    assert _statuses(results) == {
        "tls.connect": "pass",
        "tls.starttls": "fail",
        "auth.before-tls": "pass",
    }
    starttls = results["tls.starttls"]
    # Clear text right after the 220 is what a STARTTLS injection looks like too: when it is
    # already buffered as the 220 is read, the client names that instead of the handshake.
    assert "handshake failed" in starttls.summary or (
        how == "garbage" and "possible STARTTLS injection" in starttls.summary
    )
    assert not starttls.detail.rstrip().endswith(":")  # says what happened, even without a reason
    assert "smtpd_tls_chain_files" in starttls.fix
    assert results["auth.login"].status is Status.SKIP


async def test_421_banner_is_could_not_tell_and_554_is_a_refusal(lab: Lab) -> None:
    with tiny_smtp(Behaviour(banner="421 4.7.0 too many connections")) as server:
        busy = await _verify(lab, server)
    assert _statuses(busy) == {"tls.connect": "error"}
    assert "421" in busy["tls.connect"].summary and "try again later" in busy["tls.connect"].fix
    assert all(r.fix for r in busy.values())
    with tiny_smtp(Behaviour(banner="554 5.7.1 blocked")) as server:
        blocked = await _verify(lab, server)
    assert _statuses(blocked) == {"tls.connect": "fail"}
    assert "554" in blocked["tls.connect"].summary


async def test_server_offering_only_xoauth2(lab: Lab, certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["good"]
    with tiny_smtp(Behaviour(cert=cert, key=key, mechanisms=("XOAUTH2",))) as server:
        results = await _verify(lab, server)
    assert results["auth.mechanisms"].status is Status.FAIL
    assert "XOAUTH2" in results["auth.mechanisms"].summary
    assert 'outbound.auth = "xoauth2"' in results["auth.mechanisms"].fix
    assert results["auth.login"].status is Status.SKIP
    for check_id in ("tls.starttls", "tls.certificate", "tls.hostname", "tls.version"):
        assert results[check_id].status is Status.PASS, results[check_id]


@pytest.mark.parametrize(
    ("cert_name", "summary", "fix"),
    [
        ("self", "self-signed certificate", "public CA"),
        ("future", "not yet valid", "clock"),
    ],
)
async def test_certificate_problems_are_named(
    lab: Lab, certs: dict[str, tuple[Path, Path]], cert_name: str, summary: str, fix: str
) -> None:
    cert, key = certs[cert_name]
    with tiny_smtp(Behaviour(cert=cert, key=key)) as server:
        results = await _verify(lab, server)
    certificate = results["tls.certificate"]
    assert certificate.status is Status.FAIL
    assert certificate.summary.startswith(summary) and "untrusted issuer" not in certificate.summary
    assert fix in certificate.fix
    # The name is right; only the chain/dates are wrong.
    assert results["tls.hostname"].status is Status.PASS
    # No password goes to a server whose certificate does not verify.
    assert results["auth.login"].status is Status.SKIP
    assert not [line for line in server.received if " AUTH" in line or line.startswith("AUTH")]
