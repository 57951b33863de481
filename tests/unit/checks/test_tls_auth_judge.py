"""The TLS/AUTH judge on hand-built probes: no sockets, one verdict per check id."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from smtpconn.checks.catalogue import TLS_AUTH
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.tls_auth.judge import judge
from smtpconn.checks.tls_auth.probe import LoginOutcome, LoginStep, Probe
from smtpconn.profile.model import OutboundServer
from smtpconn.profile.secrets import SecretRef
from smtpconn.smtp.certinfo import CertSummary
from smtpconn.smtp.failures import CertProblem, FailureKind, SmtpFailure, StageName
from smtpconn.smtp.replies import Extensions, Reply, parse_ehlo
from smtpconn.smtp.session import TlsInfo
from smtpconn.smtp.vocab import AuthMechanism, Security

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HOST = "mail.example.test"


def _server(
    security: Security = Security.STARTTLS, auth: AuthMechanism = AuthMechanism.AUTO
) -> OutboundServer:
    return OutboundServer(
        host=HOST,
        port=465 if security is Security.TLS else 587,
        security=security,
        auth=auth,
        username="support@example.test",
        secret=SecretRef("env", "OUT_SECRET"),
    )


def _ehlo(*keywords: str) -> Extensions:
    return parse_ehlo(Reply(250, (HOST, *keywords)))


def _leaf(days_left: float = 90, names: tuple[str, ...] = (HOST,)) -> CertSummary:
    return CertSummary(
        subject=names[0],
        issuer="Example CA",
        dns_names=names,
        ip_addresses=(),
        not_before=NOW - dt.timedelta(days=30),
        not_after=NOW + dt.timedelta(days=days_left),
    )


def _tls(version: str = "TLSv1.3") -> TlsInfo:
    return TlsInfo(version, "TLS_AES_256_GCM_SHA384", True, b"der")


def _good(**changes: object) -> Probe:
    """What a well-run STARTTLS submission server shows: everything passes."""
    probe = Probe(
        _server(),
        address="192.0.2.10",
        banner=f"220 {HOST} ESMTP",
        before_tls=_ehlo("PIPELINING", "STARTTLS"),
        after_tls=_ehlo("PIPELINING", "AUTH PLAIN LOGIN"),
        tls=_tls(),
        chain_verified=True,
        hostname_verified=True,
        leaf=_leaf(),
        login=LoginOutcome(
            LoginStep.ACCEPTED, reply=Reply(235, ("2.7.0 Authentication successful",))
        ),
    )
    return dataclasses.replace(probe, **changes)  # type: ignore[arg-type]


def _judged(probe: Probe, *, insecure: bool = False) -> dict[str, CheckResult]:
    results = judge(probe, insecure=insecure, now=NOW)
    assert [r.id for r in results] == list(TLS_AUTH)
    for r in results:
        if r.status is not Status.PASS:
            assert r.fix, f"{r.id} is {r.status} without a fix"
    return {r.id: r for r in results}


def _failure(kind: FailureKind, stage: StageName = StageName.STARTTLS, **kw: object) -> SmtpFailure:
    return SmtpFailure(stage, kind, f"{kind.value} happened", **kw)  # type: ignore[arg-type]


def _all_pass_but_token(results: dict[str, CheckResult]) -> None:
    """A password login: auth.token has nothing to judge."""
    assert results.pop("auth.token").status is Status.SKIP
    assert {r.status for r in results.values()} == {Status.PASS}


def test_all_good() -> None:
    results = _judged(_good())
    _all_pass_but_token(results)
    assert "PLAIN" in results["auth.mechanisms"].summary
    assert "OUT_SECRET" in results["auth.login"].detail


def test_implicit_tls_all_good() -> None:
    results = _judged(_good(server=_server(Security.TLS), before_tls=None))
    _all_pass_but_token(results)
    assert "implicit TLS" in results["tls.starttls"].summary


def test_no_starttls() -> None:
    probe = _good(
        before_tls=_ehlo("PIPELINING"),
        after_tls=None,
        tls=None,
        chain_verified=False,
        hostname_verified=False,
        leaf=None,
        login=None,
        tls_failure=_failure(FailureKind.NO_STARTTLS),
    )
    results = _judged(probe)
    assert results["tls.connect"].status is Status.PASS
    assert results["tls.starttls"].status is Status.FAIL
    assert "not offered" in results["tls.starttls"].summary
    assert results["auth.before-tls"].status is Status.PASS
    for check_id in ("tls.version", "tls.certificate", "tls.hostname", "tls.expiry"):
        assert results[check_id].status is Status.SKIP
    assert results["auth.login"].status is Status.SKIP


def test_auth_offered_before_tls() -> None:
    results = _judged(_good(before_tls=_ehlo("STARTTLS", "AUTH PLAIN LOGIN")))
    assert results["auth.before-tls"].status is Status.FAIL
    assert "AUTH LOGIN PLAIN is offered in clear text" in results["auth.before-tls"].summary
    assert "smtpd_tls_auth_only" in results["auth.before-tls"].fix
    assert results["auth.login"].status is Status.PASS


def test_tls_1_0_only() -> None:
    probe = _good(tls=_tls("TLSv1"), login=LoginOutcome(LoginStep.TLS_TOO_OLD))
    results = _judged(probe)
    assert results["tls.version"].status is Status.FAIL
    assert "TLSv1 negotiated" in results["tls.version"].summary
    assert results["auth.login"].status is Status.SKIP
    assert "too old" in results["auth.login"].summary


def test_no_acceptable_tls_version_at_all() -> None:
    failure = _failure(
        FailureKind.TLS_HANDSHAKE,
        StageName.TLS,
    )
    failure.message = "the TLS handshake failed: [SSL: UNSUPPORTED_PROTOCOL] unsupported protocol"
    probe = _good(
        tls=None, after_tls=None, leaf=None, login=None, chain_verified=False, tls_failure=failure
    )
    results = _judged(probe)
    assert results["tls.starttls"].status is Status.FAIL
    assert results["tls.version"].status is Status.FAIL
    assert results["tls.version"].fix == "enable TLS 1.2 and 1.3 on the server"


@pytest.mark.parametrize(
    ("days_left", "status"),
    [(-1, Status.FAIL), (0.5, Status.WARN), (20.5, Status.WARN), (21.5, Status.PASS)],
)
def test_expiry_thresholds(days_left: float, status: Status) -> None:
    results = _judged(_good(leaf=_leaf(days_left)))
    assert results["tls.expiry"].status is status


def test_expired_certificate() -> None:
    leaf = _leaf(-3)
    probe = _good(
        cert_problems=[CertProblem.EXPIRED],
        cert_messages=["certificate has expired"],
        chain_verified=False,
        hostname_verified=False,
        leaf=leaf,
        login=None,
    )
    results = _judged(probe)
    assert results["tls.certificate"].status is Status.FAIL
    assert results["tls.certificate"].summary == f"expired on {leaf.not_after.date().isoformat()}"
    assert results["tls.expiry"].status is Status.FAIL
    assert results["tls.hostname"].status is Status.PASS  # the name is right; the date is not
    assert results["auth.login"].status is Status.SKIP
    assert "impostor" in results["auth.login"].summary


def test_hostname_mismatch() -> None:
    probe = _good(
        cert_problems=[CertProblem.HOSTNAME_MISMATCH],
        cert_messages=["Hostname mismatch"],
        hostname_verified=False,
        leaf=_leaf(names=("other.example.test",)),
        login=None,
    )
    results = _judged(probe)
    assert results["tls.certificate"].status is Status.PASS
    assert results["tls.hostname"].status is Status.FAIL
    assert "other.example.test" in results["tls.hostname"].summary
    assert HOST in results["tls.hostname"].fix
    assert results["auth.login"].status is Status.SKIP


def test_untrusted_issuer() -> None:
    probe = _good(
        cert_problems=[CertProblem.UNTRUSTED_ISSUER],
        cert_messages=["unable to get local issuer certificate"],
        chain_verified=False,
        hostname_verified=False,
        login=None,
    )
    results = _judged(probe)
    assert results["tls.certificate"].status is Status.FAIL
    assert "untrusted issuer: Example CA" in results["tls.certificate"].summary
    assert "--ca-file" in results["tls.certificate"].fix
    assert results["tls.hostname"].status is Status.PASS
    assert results["auth.login"].status is Status.SKIP


def test_auth_failed_535() -> None:
    reply = Reply(535, ("5.7.8 Error: authentication failed",))
    failure = _failure(FailureKind.AUTH_FAILED, StageName.AUTH, reply=reply, permanent=True)
    results = _judged(_good(login=LoginOutcome(LoginStep.REFUSED, failure=failure)))
    assert results["auth.login"].status is Status.FAIL
    assert results["auth.login"].detail == str(reply)
    assert "outbound.username (support@example.test)" in results["auth.login"].fix
    assert "XOAUTH2" not in results["auth.login"].fix


def test_auth_failed_where_xoauth2_is_offered_gives_the_one_advice() -> None:
    failure = _failure(FailureKind.AUTH_FAILED, StageName.AUTH, reply=Reply(535, ("5.7.8 no",)))
    probe = _good(
        after_tls=_ehlo("AUTH LOGIN XOAUTH2"),
        login=LoginOutcome(LoginStep.REFUSED, failure=failure),
    )
    results = _judged(probe)
    assert results["auth.login"].fix.startswith("the server offers XOAUTH2")
    assert 'outbound.auth = "xoauth2"' in results["auth.login"].fix


def test_a_microsoft_reply_code_is_explained_by_the_catalogue() -> None:
    reply = Reply(
        535, ("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",)
    )
    failure = _failure(FailureKind.AUTH_FAILED, StageName.AUTH, reply=reply)
    results = _judged(_good(login=LoginOutcome(LoginStep.REFUSED, failure=failure)))
    login = results["auth.login"]
    assert login.status is Status.FAIL
    assert "Microsoft 365" in login.summary and "SMTP AUTH is disabled" in login.summary
    assert "Set-CASMailbox" in login.fix
    assert login.detail == str(reply)


def test_a_throttled_login_is_an_error_not_a_fail() -> None:
    reply = Reply(454, ("4.7.0 Too many login attempts, please try again later.",))
    failure = _failure(FailureKind.AUTH_FAILED, StageName.AUTH, reply=reply)
    results = _judged(_good(login=LoginOutcome(LoginStep.REFUSED, failure=failure)))
    assert results["auth.login"].status is Status.ERROR
    assert "too many login attempts" in results["auth.login"].summary


def test_auth_temporarily_unavailable_is_an_error() -> None:
    failure = _failure(FailureKind.AUTH_FAILED, StageName.AUTH, reply=Reply(454, ("4.7.0 later",)))
    results = _judged(_good(login=LoginOutcome(LoginStep.REFUSED, failure=failure)))
    assert results["auth.login"].status is Status.ERROR


def test_auth_mechanism_not_offered() -> None:
    probe = _good(
        server=_server(auth=AuthMechanism.PLAIN),
        after_tls=_ehlo("AUTH LOGIN"),
        login=LoginOutcome(LoginStep.NOT_OFFERED),
    )
    results = _judged(probe)
    assert results["auth.mechanisms"].status is Status.FAIL
    assert "AUTH PLAIN is not offered" in results["auth.mechanisms"].summary
    assert results["auth.login"].status is Status.SKIP


def test_only_xoauth2_offered() -> None:
    probe = _good(after_tls=_ehlo("AUTH XOAUTH2"), login=LoginOutcome(LoginStep.NOT_OFFERED))
    results = _judged(probe)
    assert results["auth.mechanisms"].status is Status.FAIL
    assert 'outbound.auth = "xoauth2"' in results["auth.mechanisms"].fix


def test_unreadable_secret_is_an_error() -> None:
    from smtpconn.errors import UsageError

    error = UsageError("OUT_SECRET is not set", fix="export OUT_SECRET")
    results = _judged(_good(login=LoginOutcome(LoginStep.SECRET_UNREADABLE, error=error)))
    assert results["auth.login"].status is Status.ERROR
    assert results["auth.login"].fix == "export OUT_SECRET"


def test_starttls_injection() -> None:
    probe = _good(
        after_tls=None,
        tls=None,
        chain_verified=False,
        hostname_verified=False,
        leaf=None,
        login=None,
        tls_failure=_failure(FailureKind.STARTTLS_INJECTION),
    )
    results = _judged(probe)
    assert results["tls.starttls"].status is Status.FAIL
    assert "STARTTLS injection" in results["tls.starttls"].summary
    assert "man in the middle" in results["tls.starttls"].fix
    assert results["auth.login"].status is Status.SKIP


@pytest.mark.parametrize(("code", "status"), [(554, Status.FAIL), (421, Status.ERROR)])
def test_banner_rejected(code: int, status: Status) -> None:
    failure = _failure(
        FailureKind.BANNER_REJECTED, StageName.BANNER, reply=Reply(code, ("go away",))
    )
    probe = Probe(_server(), address="192.0.2.10", connect_failure=failure)
    results = _judged(probe)
    assert results["tls.connect"].status is status
    assert all(
        r.status is Status.SKIP and "refused us at the banner" in r.summary
        for i, r in results.items()
        if i != "tls.connect"
    )


def test_refused_connection_is_an_error_and_the_rest_is_skipped() -> None:
    failure = _failure(FailureKind.REFUSED, StageName.CONNECT)
    results = _judged(Probe(_server(), connect_failure=failure))
    assert results["tls.connect"].status is Status.ERROR
    assert "outbound.port" in results["tls.connect"].fix
    assert {results[i].status for i in TLS_AUTH[1:]} == {Status.SKIP}


def test_implicit_tls_on_a_plain_text_port() -> None:
    failure = _failure(FailureKind.TLS_HANDSHAKE, StageName.TLS)
    failure.message = "the TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number"
    probe = Probe(_server(Security.TLS), tls_failure=failure)
    results = _judged(probe)
    assert results["tls.connect"].status is Status.FAIL
    assert "not an implicit-TLS port" in results["tls.connect"].fix


def test_insecure_marks_tls_results_and_warns_on_the_certificate() -> None:
    results = _judged(_good(chain_verified=False, hostname_verified=False), insecure=True)
    assert results["tls.certificate"].status is Status.WARN
    assert results["tls.hostname"].status is Status.WARN
    assert "covers mail.example.test" in results["tls.hostname"].summary
    assert all("INSECURE" in results[i].summary for i in TLS_AUTH if i.startswith("tls."))
    assert results["auth.login"].status is Status.PASS
