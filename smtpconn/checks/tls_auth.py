"""``verify``'s TLS and AUTH family: what the customer's outbound server does on the wire.

One polite session per server (banner, EHLO, STARTTLS, EHLO, AUTH, QUIT), shared between every
support address that uses the same server and credentials, and one connection per IP address at
a time. The session layer (``smtpconn.smtp.session``) enforces the policy: nothing secret goes out
before TLS 1.2+, and a missing STARTTLS is a failure, never a fall-back.

When the certificate does not verify, the session ends there (no password goes to a server we
cannot authenticate) and a second session with a more lenient context finds out what else is
wrong (which names the certificate covers, when it expires, which mechanisms are offered after
TLS), so that every problem is reported at once rather than one per run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpconn.checks import catalogue
from smtpconn.checks.common import no_server_reason, server_addresses
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.errors import SmtpconnError
from smtpconn.profile.model import OutboundServer, SupportAddress
from smtpconn.smtp import sasl
from smtpconn.smtp.certinfo import CertSummary, summarise_certificate
from smtpconn.smtp.failures import CertProblem, FailureKind, SmtpFailure
from smtpconn.smtp.replies import Extensions
from smtpconn.smtp.session import SmtpSession, TlsInfo
from smtpconn.smtp.vocab import Security

IDS = CHECK_IDS = catalogue.TLS_AUTH
EXPIRY_WARN_DAYS = 21
INSECURE_NOTE = "INSECURE: --insecure is set, certificates are NOT checked"

_CONNECT_ERRORS = (
    FailureKind.RESOLVE,
    FailureKind.REFUSED,
    FailureKind.UNREACHABLE,
    FailureKind.TIMEOUT,
    FailureKind.CLOSED,
)


@dataclass
class _Probe:
    """What one (or, for a bad certificate, two) sessions found out."""

    server: OutboundServer
    address: str | None = None
    banner: str = ""
    connect_failure: SmtpFailure | None = None
    before_tls: Extensions | None = None
    after_tls: Extensions | None = None
    tls_failure: SmtpFailure | None = None  # STARTTLS missing/refused, handshake failed
    tls: TlsInfo | None = None  # of the session that got through TLS (maybe the lenient one)
    cert_problems: list[CertProblem] = field(default_factory=list)
    cert_messages: list[str] = field(default_factory=list)
    chain_verified: bool = False
    hostname_verified: bool = False
    leaf: CertSummary | None = None
    auth_result: CheckResult | None = None


def _result(
    check_id: str, status: Status, summary: str, detail: str = "", fix: str = ""
) -> CheckResult:
    return CheckResult(check_id, status, summary, detail, fix)


def _skip_all(reason: str, fix: str = "") -> list[CheckResult]:
    return [_result(i, Status.SKIP, reason, fix=fix) for i in CHECK_IDS]


async def run_tls_auth(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    reason = no_server_reason(entry)
    if reason is not None or entry.outbound is None:
        return _skip_all(reason or "no outbound server")
    server = entry.outbound
    key = (
        "tls-auth",
        server.host.lower(),
        server.port,
        server.security.value,
        server.auth.value,
        server.username,
        str(server.secret),
    )
    return await ctx.once(key, lambda: _check_server(ctx, server))


async def _check_server(ctx: CheckContext, server: OutboundServer) -> list[CheckResult]:
    found = await server_addresses(ctx, server.host)
    if not found.addresses:
        if found.errors:
            return [
                _result(
                    "tls.connect",
                    Status.ERROR,
                    f"could not resolve {server.host}",
                    "; ".join(found.errors),
                    "check the resolver (--resolver) and try again",
                ),
                *_skip_all("not checked: the server could not be reached")[1:],
            ]
        return [
            _result(
                "tls.connect",
                Status.FAIL,
                f"{server.host} has no address (no A or AAAA record)",
                fix=f"publish an A/AAAA record for {server.host}, or correct outbound.host",
            ),
            *_skip_all("not checked: the server has no address")[1:],
        ]
    probe = _Probe(server)
    for address in found.addresses:
        lock = await ctx.once(("tls-auth.ip-lock", address), _new_lock)
        async with lock:
            await _probe_address(ctx, probe, address)
        if probe.connect_failure is None or probe.connect_failure.kind not in _CONNECT_ERRORS:
            break
    return _judge(ctx, probe)


async def _new_lock() -> asyncio.Lock:
    return asyncio.Lock()


def _context(ctx: CheckContext, *, verify_chain: bool, verify_host: bool) -> ssl.SSLContext:
    from smtpconn.net import make_client_tls_context

    # The library-default minimum is kept so an old server completes the handshake and
    # tls.version can say what it speaks; the session refuses AUTH below TLS 1.2 anyway.
    context = make_client_tls_context(ctx.settings.ca_file, insecure=ctx.settings.insecure)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    if not verify_host or not verify_chain:
        context.check_hostname = False
    if not verify_chain:
        context.verify_mode = ssl.CERT_NONE
    return context


def _transcript(ctx: CheckContext, host: str) -> Callable[[str], None] | None:
    if ctx.transcript is None:
        return None
    out = ctx.transcript
    return lambda line: out(f"[{host}] {line}")


async def _probe_address(ctx: CheckContext, probe: _Probe, address: str) -> None:
    probe.address = address
    probe.connect_failure = None
    if ctx.settings.insecure:
        await _run_level(ctx, probe, address, verify_chain=False, verify_host=False)
        return
    if await _run_level(ctx, probe, address, verify_chain=True, verify_host=True):
        return
    # The certificate failed. Learn the rest with more lenient sessions, which never send AUTH:
    # chain-only first when the name was the (first) problem, then no verification at all.
    if probe.cert_problems[-1] is CertProblem.HOSTNAME_MISMATCH and await _run_level(
        ctx, probe, address, verify_chain=True, verify_host=False
    ):
        return
    await _run_level(ctx, probe, address, verify_chain=False, verify_host=False)


async def _run_level(
    ctx: CheckContext, probe: _Probe, address: str, *, verify_chain: bool, verify_host: bool
) -> bool:
    context = _context(ctx, verify_chain=verify_chain, verify_host=verify_host)
    session = _session(ctx, probe.server, address, context)
    try:
        return await _one_session(ctx, probe, session, verify_chain, verify_host)
    finally:
        await session.quit()


def _session(
    ctx: CheckContext, server: OutboundServer, address: str, context: ssl.SSLContext
) -> SmtpSession:
    import socket

    return SmtpSession(
        server.host,
        server.port,
        tls_context=context,
        ehlo_name=socket.getfqdn() or "localhost",
        timeout=ctx.settings.timeout,
        address=address,
        transcript=_transcript(ctx, server.host),
    )


async def _one_session(
    ctx: CheckContext, probe: _Probe, session: SmtpSession, verify_chain: bool, verify_host: bool
) -> bool:
    """Run one session; True when nothing more can be learnt from another one."""
    server = probe.server
    try:
        if server.security is Security.TLS:
            await session.open(implicit_tls=True)
        else:
            await session.open()
        probe.banner = str(session.banner) if session.banner else ""
        if server.security is Security.STARTTLS:
            probe.before_tls = await session.ehlo()
            await session.starttls()
        probe.after_tls = await session.ehlo()
    except SmtpFailure as failure:
        if session.banner is not None:
            probe.banner = str(session.banner)
        if failure.kind is FailureKind.CERTIFICATE:
            assert failure.cert_problem is not None
            probe.cert_problems.append(failure.cert_problem)
            probe.cert_messages.append(failure.message)
            return False
        if (
            failure.kind in _CONNECT_ERRORS and session.banner is None
        ) or failure.kind is FailureKind.BANNER_REJECTED:
            probe.connect_failure = failure
        else:
            probe.tls_failure = failure
        return True
    probe.tls = session.tls
    assert session.tls is not None
    if session.tls.peer_cert_der:
        probe.leaf = summarise_certificate(session.tls.peer_cert_der)
    if verify_chain and not ctx.settings.insecure:
        probe.chain_verified = True
        probe.hostname_verified = verify_host
    if (verify_chain and verify_host) or ctx.settings.insecure:
        probe.auth_result = await _try_login(ctx, probe, session)
    return True


async def _try_login(ctx: CheckContext, probe: _Probe, session: SmtpSession) -> CheckResult:
    from smtpconn.profile.secrets import resolve_secret
    from smtpconn.profile.wire import server_spec
    from smtpconn.smtp.session import login

    server = probe.server
    assert session.tls is not None
    if not session.tls.version_ok:
        return _result(
            "auth.login",
            Status.SKIP,
            f"not attempted: {session.tls.version} is too old to send credentials over",
            fix="enable TLS 1.2 or newer on the server (see tls.version)",
        )
    offered = probe.after_tls.auth_mechanisms if probe.after_tls else frozenset()
    if sasl.choose_mechanism(server.auth, offered) is None:
        return _result(
            "auth.login",
            Status.SKIP,
            "not attempted: the configured mechanism is not offered (see auth.mechanisms)",
            fix="see auth.mechanisms",
        )
    try:
        secret = resolve_secret(server.secret, ctx.base_dir)
    except SmtpconnError as exc:
        return _result(
            "auth.login",
            Status.ERROR,
            f"could not read the secret {server.secret}: {exc.message}",
            fix=exc.fix or "make the secret reference readable where smtpconn runs",
        )
    try:
        reply = await login(session, server_spec(server), secret)
    except SmtpFailure as failure:
        detail = str(failure.reply) if failure.reply else ""
        if failure.reply is not None and failure.reply.transient:
            return _result(
                "auth.login",
                Status.ERROR,
                f"the server could not check the credentials now: {failure.reply}",
                detail,
                "try again later; if it persists, check the server's authentication backend",
            )
        fix = (
            f"check outbound.username ({server.username}) and the secret behind "
            f"{server.secret}; the account must be allowed to send via SMTP AUTH"
        )
        advice = sasl.xoauth2_advice(server.auth, offered)
        if advice is not None:
            fix = advice + "; otherwise " + fix
        return _result(
            "auth.login",
            Status.FAIL,
            f"the server refused the credentials of {server.username}",
            detail or failure.message,
            fix,
        )
    return _result(
        "auth.login",
        Status.PASS,
        f"{server.username} authenticated ({reply})",
        "the secret was read from " + str(server.secret) + " and never shown",
    )


# ----------------------------------------------------------------------------------------------
# Judging what was found


def _judge(ctx: CheckContext, probe: _Probe) -> list[CheckResult]:
    server = probe.server
    where = f"{server.host} port {server.port}" + (
        f" ({probe.address})" if probe.address and probe.address != server.host else ""
    )
    insecure = ctx.settings.insecure
    results: dict[str, CheckResult] = {}

    failure = probe.connect_failure
    if failure is not None:
        results["tls.connect"] = _connect_result(failure, where)
        reason = "not checked: " + (
            "the server refused us at the banner"
            if failure.kind is FailureKind.BANNER_REJECTED
            else "the server could not be reached"
        )
        return [results["tls.connect"], *_skip_all(reason, "see tls.connect")[1:]]

    handshake_failed = probe.tls_failure is not None and probe.tls_failure.kind in (
        FailureKind.TLS_HANDSHAKE,
        FailureKind.TIMEOUT,
        FailureKind.CLOSED,
    )
    if (
        server.security is Security.TLS
        and handshake_failed
        and probe.tls is None
        and not probe.cert_problems
    ):
        assert probe.tls_failure is not None
        results["tls.connect"] = _result(
            "tls.connect",
            Status.FAIL,
            f"connected to {where}, but the implicit TLS handshake failed",
            _handshake_detail(probe.tls_failure),
            _handshake_fix(probe.tls_failure, implicit=True),
        )
    else:
        results["tls.connect"] = _result(
            "tls.connect", Status.PASS, f"connected to {where}", f"banner: {probe.banner}"
        )

    # tls.starttls and auth.before-tls
    if server.security is Security.TLS:
        results["tls.starttls"] = _result(
            "tls.starttls", Status.PASS, "implicit TLS (RFC 8314): encrypted from the first byte"
        )
        results["auth.before-tls"] = _result(
            "auth.before-tls", Status.PASS, "implicit TLS: nothing is said in clear text"
        )
    else:
        results["tls.starttls"] = _starttls_result(probe, where)
        before = probe.before_tls
        if before is not None and before.auth_offered:
            mechs = " ".join(sorted(before.auth_mechanisms))
            results["auth.before-tls"] = _result(
                "auth.before-tls",
                Status.FAIL,
                f"AUTH {mechs} is offered in clear text, before STARTTLS",
                "a client that does not insist on TLS (or a stripping middlebox) would send "
                "passwords readable by anyone on the path; smtpconn never does",
                "offer AUTH only after TLS: Postfix `smtpd_tls_auth_only = yes` (and "
                "`smtpd_tls_security_level = encrypt` on the submission port); Exchange: "
                "require TLS on the receive connector; Exim: `auth_advertise_hosts = "
                "${if eq{$tls_in_cipher}{}{}{*}}`",
            )
        elif before is not None:
            results["auth.before-tls"] = _result(
                "auth.before-tls", Status.PASS, "AUTH is not offered before STARTTLS"
            )
        else:
            results["auth.before-tls"] = _result(
                "auth.before-tls", Status.SKIP, "not checked: no EHLO reply before TLS"
            )

    reached_tls = probe.tls is not None
    # tls.version
    if probe.tls is not None:
        if probe.tls.version_ok:
            results["tls.version"] = _result(
                "tls.version", Status.PASS, f"{probe.tls.version}, cipher {probe.tls.cipher}"
            )
        else:
            results["tls.version"] = _result(
                "tls.version",
                Status.FAIL,
                f"{probe.tls.version} negotiated (cipher {probe.tls.cipher}): TLS 1.2 or newer is required",
                fix="enable TLS 1.2 and 1.3 (Postfix: `smtpd_tls_protocols = >=TLSv1.2`, "
                "`smtpd_tls_mandatory_protocols = >=TLSv1.2`)",
            )
    elif probe.tls_failure is not None and _looks_like_old_tls(probe.tls_failure):
        results["tls.version"] = _result(
            "tls.version",
            Status.FAIL,
            "the server offers no TLS version we accept (TLS 1.2 or newer)",
            probe.tls_failure.message,
            "enable TLS 1.2 and 1.3 on the server",
        )

    _certificate_results(probe, server, results, insecure)

    # auth.mechanisms and auth.login
    if probe.after_tls is not None:
        offered = probe.after_tls.auth_mechanisms
        chosen = sasl.choose_mechanism(server.auth, offered)
        offered_text = " ".join(sorted(offered)) or "none"
        if chosen is not None:
            results["auth.mechanisms"] = _result(
                "auth.mechanisms",
                Status.PASS,
                f"AUTH {chosen} is offered after TLS (offered: {offered_text})",
            )
        else:
            wanted = sasl.wanted_text(server.auth)
            fix = sasl.xoauth2_advice(server.auth, offered) or (
                f"enable AUTH {wanted} on the server after TLS, or set outbound.auth to one it offers"
            )
            results["auth.mechanisms"] = _result(
                "auth.mechanisms",
                Status.FAIL,
                f"AUTH {wanted} is not offered after TLS (offered: {offered_text})",
                fix=fix,
            )
    if probe.auth_result is not None:
        results["auth.login"] = probe.auth_result
    elif reached_tls and probe.cert_problems:
        results["auth.login"] = _result(
            "auth.login",
            Status.SKIP,
            "not attempted: the certificate did not verify, so the password could reach an impostor",
            fix="fix the certificate (see tls.certificate / tls.hostname); for a private test "
            "set-up only, --insecure skips certificate checks",
        )

    reason = "not checked: TLS could not be established"
    ordered = []
    for check_id in CHECK_IDS:
        result = results.get(check_id) or _result(
            check_id, Status.SKIP, reason, fix="see tls.starttls"
        )
        if insecure and check_id.startswith("tls.") and result.status is not Status.SKIP:
            result = CheckResult(
                result.id,
                result.status,
                f"{result.summary} [{INSECURE_NOTE}]",
                result.detail,
                result.fix,
            )
        ordered.append(result)
    return ordered


def _connect_result(failure: SmtpFailure, where: str) -> CheckResult:
    kind = failure.kind
    if kind is FailureKind.BANNER_REJECTED:
        reply = failure.reply
        if reply is not None and reply.code == 421:
            return _result(
                "tls.connect",
                Status.ERROR,
                f"{where} answered 421 at the banner: not accepting connections now",
                str(reply),
                "try again later; if it persists, the server limits connections from this "
                "address (Postfix: smtpd_client_connection_count_limit, postscreen)",
            )
        return _result(
            "tls.connect",
            Status.FAIL,
            f"{where} refuses this client at the banner ({reply.code if reply else '?'})",
            str(reply) if reply else failure.message,
            "allow the relay's IP address on the server (it is blocked, or not on the "
            "list of clients allowed to connect)",
        )
    fixes = {
        FailureKind.REFUSED: "check outbound.host and outbound.port (587 for STARTTLS, 465 for "
        "implicit TLS), and that the server listens there",
        FailureKind.TIMEOUT: "check outbound.host/port and any firewall between here and the "
        "server (outgoing 587/465 is often blocked)",
        FailureKind.UNREACHABLE: "check the network route to the server",
        FailureKind.RESOLVE: "check outbound.host and the resolver",
        FailureKind.CLOSED: "the server hung up before greeting: check its logs (client "
        "restrictions, postscreen)",
    }
    summaries = {
        FailureKind.REFUSED: f"{where} refused the connection (nothing listens there)",
        FailureKind.TIMEOUT: f"no answer from {where} in time",
        FailureKind.UNREACHABLE: f"{where} is unreachable",
        FailureKind.RESOLVE: f"{where} could not be resolved",
        FailureKind.CLOSED: f"{where} closed the connection without a banner",
    }
    return _result(
        "tls.connect",
        Status.ERROR,
        summaries.get(kind, failure.message),
        failure.message,
        fixes.get(kind, "check the server"),
    )


def _starttls_result(probe: _Probe, where: str) -> CheckResult:
    failure = probe.tls_failure
    if failure is not None and failure.kind is FailureKind.NO_STARTTLS:
        return _result(
            "tls.starttls",
            Status.FAIL,
            "STARTTLS is not offered: the connection would stay in clear text",
            failure.message,
            "enable STARTTLS on the server (Postfix: `smtpd_tls_security_level = encrypt` "
            "with smtpd_tls_chain_files); if the server has it, a firewall or middlebox on "
            "the path is stripping it (Cisco 'ESMTP inspection' and similar): switch that off",
        )
    if failure is not None and failure.kind is FailureKind.STARTTLS_REJECTED:
        return _result(
            "tls.starttls",
            Status.FAIL,
            "STARTTLS is offered but refused",
            failure.message,
            "check the server's TLS certificate and key configuration and its log",
        )
    if failure is not None and failure.kind is FailureKind.STARTTLS_INJECTION:
        return _result(
            "tls.starttls",
            Status.FAIL,
            "clear-text replies followed the server's 220 to STARTTLS: possible STARTTLS "
            "injection by a middlebox",
            failure.message,
            "something on the path between this machine and the server adds SMTP replies in "
            "clear text after the server accepts STARTTLS (a man in the middle, or a broken "
            "firewall/'SMTP inspection' proxy); a client that believed them would report a login "
            "or a delivery the server never made. Find and remove it (run verify from another "
            "network to narrow it down); smtpconn sends no credentials or mail over this path. "
            "If nothing sits on the path, the server itself writes clear text after its 220 "
            "instead of starting TLS: check its TLS configuration and log (Postfix: "
            "smtpd_tls_chain_files, and 'cannot load' in the log)",
        )
    if failure is not None and probe.tls is None and not probe.cert_problems:
        return _result(
            "tls.starttls",
            Status.FAIL if failure.kind is FailureKind.TLS_HANDSHAKE else Status.ERROR,
            "STARTTLS is offered but the TLS handshake failed",
            _handshake_detail(failure),
            _handshake_fix(failure, implicit=False),
        )
    if probe.tls is not None or probe.cert_problems:
        return _result(
            "tls.starttls", Status.PASS, "STARTTLS offered and required by smtpconn", where
        )
    return _result("tls.starttls", Status.SKIP, "not checked", fix="see tls.connect")


def _handshake_detail(failure: SmtpFailure) -> str:
    """The failure's message; when the TLS library gave no reason (the peer hung up or sent
    something that is not TLS), say that rather than end on an empty colon."""
    message = failure.message
    if message.rstrip().endswith(":"):
        message += (
            " the server accepted STARTTLS, then closed the connection or answered with "
            "something that is not TLS"
        )
    return message


def _looks_like_old_tls(failure: SmtpFailure) -> bool:
    text = failure.message.lower()
    return any(
        s in text for s in ("unsupported protocol", "no protocols available", "version too low")
    )


def _handshake_fix(failure: SmtpFailure, *, implicit: bool) -> str:
    text = failure.message.lower()
    if implicit and (
        "wrong version number" in text or "record layer" in text or "packet length" in text
    ):
        return (
            "the server answered in plain text: this is not an implicit-TLS port. Use "
            'security = "starttls" (port 587), or port 465 for implicit TLS'
        )
    if _looks_like_old_tls(failure):
        return "enable TLS 1.2 or newer on the server"
    return (
        "check the server's TLS configuration and its log: a STARTTLS that cannot complete "
        "usually means the certificate or key cannot be loaded (Postfix: smtpd_tls_chain_files "
        "or smtpd_tls_cert_file/smtpd_tls_key_file, and 'cannot load' in the log) or no "
        "protocol/cipher in common (smtpd_tls_protocols)"
    )


def _certificate_results(
    probe: _Probe, server: OutboundServer, results: dict[str, CheckResult], insecure: bool
) -> None:
    leaf = probe.leaf
    names = ", ".join(leaf.names) if leaf else "unknown"
    issued = f"subject {leaf.subject}, issued by {leaf.issuer}, names: {names}" if leaf else ""
    if insecure:
        if probe.tls is not None:
            results["tls.certificate"] = _result(
                "tls.certificate",
                Status.WARN,
                "NOT CHECKED (--insecure)",
                issued,
                "remove --insecure once the server's certificate chains to a trusted CA",
            )
            results["tls.hostname"] = _result(
                "tls.hostname",
                Status.WARN,
                "NOT CHECKED (--insecure)"
                + (
                    f"; the certificate {'covers' if leaf.matches_host(server.host) else 'does NOT cover'} {server.host}"
                    if leaf
                    else ""
                ),
                issued,
                "remove --insecure once the certificate is valid for " + server.host,
            )
    elif probe.cert_problems or probe.chain_verified:
        chain_problem = next(
            (p for p in probe.cert_problems if p is not CertProblem.HOSTNAME_MISMATCH), None
        )
        if chain_problem is None:
            results["tls.certificate"] = _result(
                "tls.certificate",
                Status.PASS,
                f"chains to a trusted CA ({leaf.issuer if leaf else 'issuer unknown'})",
                issued,
            )
        else:
            message = next(
                m
                for p, m in zip(probe.cert_problems, probe.cert_messages, strict=True)
                if p is chain_problem
            )
            results["tls.certificate"] = _result(
                "tls.certificate", Status.FAIL, *_chain_explanation(chain_problem, leaf, message)
            )
        if probe.hostname_verified or (
            CertProblem.HOSTNAME_MISMATCH not in probe.cert_problems
            and leaf is not None
            and leaf.matches_host(server.host)
        ):
            results["tls.hostname"] = _result(
                "tls.hostname", Status.PASS, f"the certificate is valid for {server.host}", issued
            )
        elif leaf is not None:
            results["tls.hostname"] = _result(
                "tls.hostname",
                Status.FAIL,
                f"the certificate is not valid for {server.host} (it names {names})",
                issued,
                f"install a certificate whose subjectAltName includes {server.host}, or set "
                f"outbound.host to a name the certificate covers ({names})",
            )
    if leaf is not None:
        results["tls.expiry"] = _expiry_result(leaf)


def _chain_explanation(
    problem: CertProblem, leaf: CertSummary | None, message: str
) -> tuple[str, str, str]:
    issuer = leaf.issuer if leaf else "an unknown issuer"
    if problem is CertProblem.UNTRUSTED_ISSUER:
        return (
            f"untrusted issuer: {issuer} is not a CA this system trusts",
            message,
            "use a certificate from a public CA and serve the full chain (Postfix: "
            "smtpd_tls_chain_files = key, certificate, intermediates); for a private CA, "
            "give its certificate with --ca-file",
        )
    if problem is CertProblem.SELF_SIGNED:
        return (
            "self-signed certificate",
            message,
            "replace it with a certificate from a public CA (e.g. Let's Encrypt); for a "
            "private CA give its certificate with --ca-file",
        )
    if problem is CertProblem.EXPIRED:
        when = leaf.not_after.date().isoformat() if leaf else "in the past"
        return (f"expired on {when}", message, "renew the certificate and reload the server")
    if problem is CertProblem.NOT_YET_VALID:
        when = leaf.not_before.date().isoformat() if leaf else "in the future"
        return (
            f"not yet valid (valid from {when})",
            message,
            "check the server's clock and the certificate's dates",
        )
    return ("the certificate does not verify", message, "check the certificate chain")


def _expiry_result(leaf: CertSummary) -> CheckResult:
    now = dt.datetime.now(dt.UTC)
    days = leaf.days_left(now)
    date = leaf.not_after.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return _result(
            "tls.expiry", Status.FAIL, f"expired on {date}", fix="renew the certificate now"
        )
    if leaf.not_before > now:
        return _result(
            "tls.expiry",
            Status.FAIL,
            f"not valid before {leaf.not_before.strftime('%Y-%m-%d %H:%M UTC')}",
            fix="check the server's clock and the certificate's dates",
        )
    if days < EXPIRY_WARN_DAYS:
        return _result(
            "tls.expiry",
            Status.WARN,
            f"expires in {int(days)} days, on {date}",
            fix="renew the certificate before it expires (automate it, e.g. certbot renew)",
        )
    return _result("tls.expiry", Status.PASS, f"valid until {date} ({int(days)} days)")
