"""The pure half of the TLS and AUTH family: a ``Probe`` in, one ``CheckResult`` per check id out.

No I/O: every builder reads only the probe (and the clock it is given), so each verdict can be
tested with a hand-built probe. A builder returns None when its check could not run; that check
is then skipped, pointing at ``tls.starttls``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from smtpconn.checks import catalogue
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.tls_auth import advice, causes
from smtpconn.checks.tls_auth.probe import LoginOutcome, LoginStep, Probe
from smtpconn.checks.tls_auth.token import token_result
from smtpconn.profile.model import OutboundServer
from smtpconn.smtp import reply_catalogue, sasl
from smtpconn.smtp.certinfo import CertSummary
from smtpconn.smtp.failures import CertProblem, FailureKind, SmtpFailure
from smtpconn.smtp.reply_catalogue import Effect, ReplyMeaning, Stage
from smtpconn.smtp.vocab import Security

CHECK_IDS = catalogue.TLS_AUTH
EXPIRY_WARN_DAYS = 21
INSECURE_NOTE = "INSECURE: --insecure is set, certificates are NOT checked"
NOT_ESTABLISHED = "not checked: TLS could not be established"


@dataclass(frozen=True, slots=True)
class Seen:
    """What every builder may read besides the probe."""

    probe: Probe
    where: str  # "host port N (address)", for summaries
    insecure: bool
    now: dt.datetime

    @property
    def server(self) -> OutboundServer:
        return self.probe.server


def result(
    check_id: str, status: Status, summary: str, detail: str = "", fix: str = ""
) -> CheckResult:
    return CheckResult(check_id, status, summary, detail, fix)


def skip_all(reason: str, fix: str = "") -> list[CheckResult]:
    return [result(i, Status.SKIP, reason, fix=fix) for i in CHECK_IDS]


def judge_unresolved(host: str, errors: Sequence[str]) -> list[CheckResult]:
    """The server's name gave no address: with lookup errors we cannot tell, without it fails."""
    if errors:
        first = result(
            "tls.connect",
            Status.ERROR,
            f"could not resolve {host}",
            "; ".join(errors),
            advice.RESOLVER,
        )
        return [first, *skip_all("not checked: the server could not be reached")[1:]]
    first = result(
        "tls.connect",
        Status.FAIL,
        f"{host} has no address (no A or AAAA record)",
        fix=advice.no_address(host),
    )
    return [first, *skip_all("not checked: the server has no address")[1:]]


def judge(probe: Probe, *, insecure: bool, now: dt.datetime | None = None) -> list[CheckResult]:
    """Every check id of the family, in catalogue order."""
    server = probe.server
    where = f"{server.host} port {server.port}" + (
        f" ({probe.address})" if probe.address and probe.address != server.host else ""
    )
    failure = probe.connect_failure
    if failure is not None:
        reason = "not checked: " + (
            "the server refused us at the banner"
            if failure.kind is FailureKind.BANNER_REJECTED
            else "the server could not be reached"
        )
        return [connect_failure(failure, where), *skip_all(reason, "see tls.connect")[1:]]
    seen = Seen(probe, where, insecure, now or dt.datetime.now(dt.UTC))
    ordered = []
    for check_id in CHECK_IDS:
        found = BUILDERS[check_id](seen) or result(
            check_id, Status.SKIP, NOT_ESTABLISHED, fix="see tls.starttls"
        )
        if insecure and check_id.startswith("tls.") and found.status is not Status.SKIP:
            found = replace(found, summary=f"{found.summary} [{INSECURE_NOTE}]")
        ordered.append(found)
    return ordered


# ----------------------------------------------------------------------------------------------
# tls.connect


def connect_failure(failure: SmtpFailure, where: str) -> CheckResult:
    kind = failure.kind
    if kind is FailureKind.BANNER_REJECTED:
        reply = failure.reply
        if reply is not None and reply.code == 421:
            return result(
                "tls.connect",
                Status.ERROR,
                f"{where} answered 421 at the banner: not accepting connections now",
                str(reply),
                advice.BANNER_421,
            )
        return result(
            "tls.connect",
            Status.FAIL,
            f"{where} refuses this client at the banner ({reply.code if reply else '?'})",
            str(reply) if reply else failure.message,
            advice.BANNER_REFUSED,
        )
    summaries = {
        FailureKind.REFUSED: f"{where} refused the connection (nothing listens there)",
        FailureKind.TIMEOUT: f"no answer from {where} in time",
        FailureKind.UNREACHABLE: f"{where} is unreachable",
        FailureKind.RESOLVE: f"{where} could not be resolved",
        FailureKind.CLOSED: f"{where} closed the connection without a banner",
    }
    return result(
        "tls.connect",
        Status.ERROR,
        summaries.get(kind, failure.message),
        failure.message,
        advice.CONNECT.get(kind, advice.CONNECT_OTHER),
    )


def tls_connect(seen: Seen) -> CheckResult:
    probe = seen.probe
    failure = probe.tls_failure
    handshake_failed = failure is not None and failure.kind in (
        FailureKind.TLS_HANDSHAKE,
        FailureKind.TIMEOUT,
        FailureKind.CLOSED,
    )
    if (
        seen.server.security is Security.TLS
        and failure is not None
        and handshake_failed
        and probe.tls is None
        and not probe.cert_problems
    ):
        plain = advice.handshake(failure, implicit=True) is advice.NOT_IMPLICIT_TLS
        cause = None if plain else causes.handshake(probe, seen.server.host)
        if cause is not None:
            return result(
                "tls.connect",
                Status.FAIL,
                f"connected to {seen.where}; {cause[0]}",
                handshake_detail(failure),
                cause[2],
            )
        return result(
            "tls.connect",
            Status.FAIL,
            f"connected to {seen.where}, but the implicit TLS handshake failed",
            handshake_detail(failure),
            advice.handshake(failure, implicit=True),
        )
    return result(
        "tls.connect", Status.PASS, f"connected to {seen.where}", f"banner: {probe.banner}"
    )


# ----------------------------------------------------------------------------------------------
# tls.starttls and auth.before-tls


def tls_starttls(seen: Seen) -> CheckResult:
    if seen.server.security is Security.TLS:
        return result(
            "tls.starttls", Status.PASS, "implicit TLS (RFC 8314): encrypted from the first byte"
        )
    probe = seen.probe
    failure = probe.tls_failure
    if failure is not None and failure.kind is FailureKind.NO_STARTTLS:
        return result(
            "tls.starttls",
            Status.FAIL,
            "STARTTLS is not offered: the connection would stay in clear text",
            failure.message,
            advice.NO_STARTTLS,
        )
    if failure is not None and failure.kind is FailureKind.STARTTLS_REJECTED:
        return result(
            "tls.starttls",
            Status.FAIL,
            "STARTTLS is offered but refused",
            failure.message,
            advice.STARTTLS_REJECTED,
        )
    if failure is not None and failure.kind is FailureKind.STARTTLS_INJECTION:
        return result(
            "tls.starttls",
            Status.FAIL,
            "clear-text replies followed the server's 220 to STARTTLS: possible STARTTLS "
            "injection by a middlebox",
            failure.message,
            advice.STARTTLS_INJECTION,
        )
    if failure is not None and probe.tls is None and not probe.cert_problems:
        cause = causes.handshake(probe, seen.server.host)
        if cause is not None:
            return result(
                "tls.starttls", Status.FAIL, cause[0], handshake_detail(failure), cause[2]
            )
        return result(
            "tls.starttls",
            Status.FAIL if failure.kind is FailureKind.TLS_HANDSHAKE else Status.ERROR,
            "STARTTLS is offered but the TLS handshake failed",
            handshake_detail(failure),
            advice.handshake(failure, implicit=False),
        )
    if probe.tls is not None or probe.cert_problems:
        return result(
            "tls.starttls", Status.PASS, "STARTTLS offered and required by smtpconn", seen.where
        )
    return result("tls.starttls", Status.SKIP, "not checked", fix="see tls.connect")


def auth_before_tls(seen: Seen) -> CheckResult:
    if seen.server.security is Security.TLS:
        return result("auth.before-tls", Status.PASS, "implicit TLS: nothing is said in clear text")
    before = seen.probe.before_tls
    if before is None:
        return result("auth.before-tls", Status.SKIP, "not checked: no EHLO reply before TLS")
    if not before.auth_offered:
        return result("auth.before-tls", Status.PASS, "AUTH is not offered before STARTTLS")
    mechs = " ".join(sorted(before.auth_mechanisms))
    return result(
        "auth.before-tls",
        Status.FAIL,
        f"AUTH {mechs} is offered in clear text, before STARTTLS",
        "a client that does not insist on TLS (or a stripping middlebox) would send "
        "passwords readable by anyone on the path; smtpconn never does",
        advice.AUTH_BEFORE_TLS,
    )


def handshake_detail(failure: SmtpFailure) -> str:
    """The failure's message; when the TLS library gave no reason (the peer hung up or sent
    something that is not TLS), say that rather than end on an empty colon."""
    message = failure.message
    if message.rstrip().endswith(":"):
        message += (
            " the server accepted STARTTLS, then closed the connection or answered with "
            "something that is not TLS"
        )
    return message


# ----------------------------------------------------------------------------------------------
# tls.version


def tls_version(seen: Seen) -> CheckResult | None:
    tls = seen.probe.tls
    if tls is not None and tls.version_ok:
        return result("tls.version", Status.PASS, f"{tls.version}, cipher {tls.cipher}")
    if tls is not None:
        return result(
            "tls.version",
            Status.FAIL,
            f"{tls.version} negotiated (cipher {tls.cipher}): TLS 1.2 or newer is required",
            fix=advice.TLS_VERSION,
        )
    old = causes.old_versions(seen.probe)
    if old is not None:
        return result("tls.version", Status.FAIL, *old)
    failure = seen.probe.tls_failure
    if failure is not None and advice.looks_like_old_tls(failure):
        return result(
            "tls.version",
            Status.FAIL,
            "the server offers no TLS version we accept (TLS 1.2 or newer)",
            failure.message,
            advice.NO_TLS_VERSION,
        )
    return None


# ----------------------------------------------------------------------------------------------
# tls.certificate, tls.hostname, tls.expiry


def _names(leaf: CertSummary | None) -> str:
    return ", ".join(leaf.names) if leaf else "unknown"


def _issued(leaf: CertSummary | None) -> str:
    if leaf is None:
        return ""
    return f"subject {leaf.subject}, issued by {leaf.issuer}, names: {_names(leaf)}"


def _judged_by_openssl(probe: Probe) -> bool:
    return bool(probe.cert_problems) or probe.chain_verified


def tls_certificate(seen: Seen) -> CheckResult | None:
    probe = seen.probe
    leaf = probe.leaf
    if seen.insecure:
        if probe.tls is None:
            return None
        return result(
            "tls.certificate",
            Status.WARN,
            "NOT CHECKED (--insecure)",
            _issued(leaf),
            advice.INSECURE_CERTIFICATE,
        )
    if not _judged_by_openssl(probe):
        return None
    chain_problem = next(
        (p for p in probe.cert_problems if p is not CertProblem.HOSTNAME_MISMATCH), None
    )
    if chain_problem is None:
        return result(
            "tls.certificate",
            Status.PASS,
            f"chains to a trusted CA ({leaf.issuer if leaf else 'issuer unknown'})",
            _issued(leaf),
        )
    message = next(
        m
        for p, m in zip(probe.cert_problems, probe.cert_messages, strict=True)
        if p is chain_problem
    )
    explained = _chain_explanation(chain_problem, leaf, message)
    if chain_problem is CertProblem.UNTRUSTED_ISSUER:
        explained = causes.missing_intermediate(probe) or explained
    return _with_sni(result("tls.certificate", Status.FAIL, *explained), seen)


def _with_sni(found: CheckResult, seen: Seen) -> CheckResult:
    """A failed certificate verdict that depends on SNI says so, with the SNI fix first."""
    note = causes.sni_note(seen.probe, seen.server.host)
    if note is None:
        return found
    return replace(
        found,
        summary=found.summary + note[0],
        detail="; ".join(d for d in (found.detail, note[1]) if d),
        fix=f"{note[2]}; otherwise: {found.fix}",
    )


def _chain_explanation(
    problem: CertProblem, leaf: CertSummary | None, message: str
) -> tuple[str, str, str]:
    issuer = leaf.issuer if leaf else "an unknown issuer"
    if problem is CertProblem.UNTRUSTED_ISSUER:
        return (
            f"untrusted issuer: {issuer} is not a CA this system trusts",
            message,
            advice.UNTRUSTED_ISSUER,
        )
    if problem is CertProblem.SELF_SIGNED:
        return ("self-signed certificate", message, advice.SELF_SIGNED)
    if problem is CertProblem.EXPIRED:
        when = leaf.not_after.date().isoformat() if leaf else "in the past"
        return (f"expired on {when}", message, advice.EXPIRED)
    if problem is CertProblem.NOT_YET_VALID:
        when = leaf.not_before.date().isoformat() if leaf else "in the future"
        return (f"not yet valid (valid from {when})", message, advice.CLOCK)
    return ("the certificate does not verify", message, advice.CHAIN_OTHER)


def tls_hostname(seen: Seen) -> CheckResult | None:
    probe = seen.probe
    leaf = probe.leaf
    host = seen.server.host
    if seen.insecure:
        if probe.tls is None:
            return None
        covers = ""
        if leaf is not None:
            covers = f"; the certificate {'covers' if leaf.matches_host(host) else 'does NOT cover'} {host}"
        return result(
            "tls.hostname",
            Status.WARN,
            "NOT CHECKED (--insecure)" + covers,
            _issued(leaf),
            advice.insecure_hostname(host),
        )
    if not _judged_by_openssl(probe):
        return None
    if probe.hostname_verified or (
        CertProblem.HOSTNAME_MISMATCH not in probe.cert_problems
        and leaf is not None
        and leaf.matches_host(host)
    ):
        return result(
            "tls.hostname", Status.PASS, f"the certificate is valid for {host}", _issued(leaf)
        )
    if leaf is None:
        return None
    found = result(
        "tls.hostname",
        Status.FAIL,
        f"the certificate is not valid for {host} (it names {_names(leaf)})",
        _issued(leaf),
        advice.wrong_hostname(host, _names(leaf)),
    )
    return _with_sni(found, seen)


def tls_expiry(seen: Seen) -> CheckResult | None:
    leaf = seen.probe.leaf
    if leaf is None:
        return None
    now = seen.now
    days = leaf.days_left(now)
    date = leaf.not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return result("tls.expiry", Status.FAIL, f"expired on {date}", fix=advice.RENEW_NOW)
    if leaf.not_before > now:
        return result(
            "tls.expiry",
            Status.FAIL,
            f"not valid before {leaf.not_before.strftime('%Y-%m-%d %H:%M UTC')}",
            fix=advice.CLOCK,
        )
    if days < EXPIRY_WARN_DAYS:
        return result(
            "tls.expiry",
            Status.WARN,
            f"expires in {int(days)} days, on {date}",
            fix=advice.RENEW_SOON,
        )
    return result("tls.expiry", Status.PASS, f"valid until {date} ({int(days)} days)")


# ----------------------------------------------------------------------------------------------
# auth.mechanisms and auth.login


def _offered(probe: Probe) -> frozenset[str]:
    return probe.after_tls.auth_mechanisms if probe.after_tls else frozenset()


def auth_mechanisms(seen: Seen) -> CheckResult | None:
    if seen.probe.after_tls is None:
        return None
    server = seen.server
    offered = _offered(seen.probe)
    chosen = sasl.choose_mechanism(server.auth, offered)
    offered_text = " ".join(sorted(offered)) or "none"
    if chosen is not None:
        return result(
            "auth.mechanisms",
            Status.PASS,
            f"AUTH {chosen} is offered after TLS (offered: {offered_text})",
        )
    wanted = sasl.wanted_text(server.auth)
    return result(
        "auth.mechanisms",
        Status.FAIL,
        f"AUTH {wanted} is not offered after TLS (offered: {offered_text})",
        fix=sasl.xoauth2_advice(server.auth, offered) or advice.mechanism_missing(wanted),
    )


def auth_login(seen: Seen) -> CheckResult | None:
    probe = seen.probe
    if probe.login is not None:
        return _login_result(seen, probe.login)
    if probe.tls is not None and probe.cert_problems:
        return result(
            "auth.login",
            Status.SKIP,
            "not attempted: the certificate did not verify, so the password could reach an impostor",
            fix=advice.LOGIN_CERTIFICATE,
        )
    return None


def _login_result(seen: Seen, login: LoginOutcome) -> CheckResult:
    server = seen.server
    if login.step is LoginStep.TLS_TOO_OLD:
        version = seen.probe.tls.version if seen.probe.tls else "the negotiated TLS version"
        return result(
            "auth.login",
            Status.SKIP,
            f"not attempted: {version} is too old to send credentials over",
            fix=advice.LOGIN_TLS_TOO_OLD,
        )
    if login.step is LoginStep.NOT_OFFERED:
        return result(
            "auth.login",
            Status.SKIP,
            "not attempted: the configured mechanism is not offered (see auth.mechanisms)",
            fix=advice.SEE_MECHANISMS,
        )
    if login.step is LoginStep.NO_TOKEN:
        return result(
            "auth.login",
            Status.SKIP,
            "not attempted: the token source gave no token (see auth.token)",
            fix="see auth.token",
        )
    if login.step is LoginStep.SECRET_UNREADABLE:
        error = login.error
        return result(
            "auth.login",
            Status.ERROR,
            f"could not read the secret {server.secret}: {error.message if error else ''}",
            fix=(error.fix if error else "") or advice.SECRET_UNREADABLE,
        )
    if login.step is LoginStep.REFUSED and login.failure is not None:
        return _refused(seen, login.failure)
    return result(
        "auth.login",
        Status.PASS,
        f"{server.username} authenticated ({login.reply})",
        credential_source(server) + ", and never shown",
    )


def credential_source(server: OutboundServer) -> str:
    """Where the login's secret came from, in words (never the secret)."""
    if server.oauth is not None:
        return (
            f"logged in with the access token of auth.token ({server.oauth.provider.value} "
            f"{server.oauth.flow.value} token source)"
        )
    return f"the secret was read from {server.secret}"


def _refused(seen: Seen, failure: SmtpFailure) -> CheckResult:
    server = seen.server
    detail = str(failure.reply) if failure.reply else ""
    meaning = reply_catalogue.explain(failure.reply, Stage.AUTH) if failure.reply else None
    # A generic "credentials refused" is better said by the advice below, which names the
    # secret reference; a provider's own code or a throttling reply says more than that.
    if meaning is not None and (
        meaning.provider_specific or meaning.effect is not Effect.FIX_SETUP
    ):
        return _refused_known(server.username, detail, meaning)
    if failure.reply is not None and failure.reply.transient:
        return result(
            "auth.login",
            Status.ERROR,
            f"the server could not check the credentials now: {failure.reply}",
            detail,
            advice.AUTH_BACKEND,
        )
    if server.oauth is not None:
        fix = advice.token_refused(server.username, server.oauth.provider.value)
    else:
        fix = advice.credentials(server.username, str(server.secret))
    xoauth2 = sasl.xoauth2_advice(server.auth, _offered(seen.probe))
    if xoauth2 is not None:
        fix = xoauth2 + "; otherwise " + fix
    return result(
        "auth.login",
        Status.FAIL,
        f"the server refused the credentials of {server.username}",
        detail or failure.message,
        fix,
    )


def _refused_known(username: str, detail: str, meaning: ReplyMeaning) -> CheckResult:
    """A refusal the reply-code catalogue explains: its cause and the setting to change."""
    if meaning.effect is Effect.FIX_SETUP:
        return result(
            "auth.login",
            Status.FAIL,
            f"{meaning.provider} refused the login of {username}: {meaning.cause}",
            detail,
            meaning.fix,
        )
    # throttled or a temporary back-end problem: the credentials were not judged
    return result(
        "auth.login",
        Status.ERROR,
        f"the server could not check the credentials now: {meaning.cause}",
        detail,
        meaning.fix,
    )


BUILDERS: dict[str, Callable[[Seen], CheckResult | None]] = {
    "tls.connect": tls_connect,
    "tls.starttls": tls_starttls,
    "tls.version": tls_version,
    "tls.certificate": tls_certificate,
    "tls.hostname": tls_hostname,
    "tls.expiry": tls_expiry,
    "auth.mechanisms": auth_mechanisms,
    "auth.before-tls": auth_before_tls,
    # Judged from the token source, not the session (run_tls_auth also fills it in when the
    # server could not be reached: the token does not depend on it).
    "auth.token": lambda seen: token_result(seen.server, seen.probe.token, seen.now.timestamp()),
    "auth.login": auth_login,
}
