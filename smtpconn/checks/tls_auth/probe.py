"""The I/O half of the TLS and AUTH family: what the customer's outbound server does on the wire.

One polite session per server (banner, EHLO, STARTTLS, EHLO, AUTH, QUIT) through the wire's own
``establish`` and ``login``, so the session layer enforces the policy here too: nothing secret
goes out before TLS 1.2+, and a missing STARTTLS is a failure, never a fall-back.

When the certificate does not verify, the session ends there (no password goes to a server we
cannot authenticate) and a second session with a more lenient context finds out what else is
wrong (which names the certificate covers, when it expires, which mechanisms are offered after
TLS), so that every problem is reported at once rather than one per run. What was found is a
``Probe``: plain data, judged by ``judge.py`` without any socket.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from smtpconn.checks.common import on_own_loop, session_context
from smtpconn.checks.model import CheckContext
from smtpconn.checks.tls_auth.diagnose import Diagnosis, diagnose_certificate, diagnose_handshake
from smtpconn.checks.tls_auth.token import TokenOutcome
from smtpconn.errors import SmtpconnError
from smtpconn.profile.credentials import outbound_credential
from smtpconn.profile.model import OutboundServer
from smtpconn.profile.wire import server_spec
from smtpconn.smtp import sasl
from smtpconn.smtp.certinfo import CertSummary, summarise_certificate
from smtpconn.smtp.failures import CertProblem, FailureKind, SmtpFailure
from smtpconn.smtp.replies import Extensions, Reply
from smtpconn.smtp.session import SmtpSession, TlsInfo, establish, login

CONNECT_ERRORS = (
    FailureKind.RESOLVE,
    FailureKind.REFUSED,
    FailureKind.UNREACHABLE,
    FailureKind.TIMEOUT,
    FailureKind.CLOSED,
)


class LoginStep(StrEnum):
    """How far the AUTH attempt got."""

    TLS_TOO_OLD = "tls-too-old"  # not attempted: no credentials below TLS 1.2
    NOT_OFFERED = "not-offered"  # not attempted: the configured mechanism is not offered
    SECRET_UNREADABLE = "secret-unreadable"  # not attempted: the secret could not be read
    NO_TOKEN = "no-token"  # not attempted: the token source gave no token (see auth.token)
    REFUSED = "refused"  # the server answered no (or could not check now)
    ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    step: LoginStep
    reply: Reply | None = None  # ACCEPTED: the server's yes
    failure: SmtpFailure | None = None  # REFUSED: its no
    error: SmtpconnError | None = None  # SECRET_UNREADABLE: why


@dataclass
class Probe:
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
    login: LoginOutcome | None = None  # None: no session was trusted with the password
    diagnosis: Diagnosis | None = None  # why TLS failed, found by report-only sessions
    token: TokenOutcome | None = None  # the OAuth token auth.login logs in with (auth.token's)


async def probe_server(
    ctx: CheckContext,
    server: OutboundServer,
    addresses: Sequence[str],
    token: TokenOutcome | None = None,
) -> Probe:
    """Probe the server's addresses in turn until one answers (one connection per IP address at
    a time, across every check of this run). ``token``: what the address's OAuth token source
    gave, logged in with instead of a static secret."""
    probe = Probe(server, token=token)
    for address in addresses:
        lock = await ctx.once(("tls-auth.ip-lock", address), _new_lock)
        async with lock:
            await _probe_address(ctx, probe, address)
            probe.diagnosis = await _diagnose(ctx, probe, address)
        if probe.connect_failure is None or probe.connect_failure.kind not in CONNECT_ERRORS:
            break
    return probe


#: Seconds a session's loop keeps running after its result, for its TLS close to complete.
CLOSE_LINGER = 2.0

# A handshake that failed this way is traced to its cause (versions, ciphers, SNI, key).
DIAGNOSED_HANDSHAKES = (FailureKind.TLS_HANDSHAKE, FailureKind.CLOSED)


async def _diagnose(ctx: CheckContext, probe: Probe, address: str) -> Diagnosis | None:
    """Only after a failure: a healthy server costs no extra session."""
    failure = probe.tls_failure
    if probe.connect_failure is not None:
        return None
    if (
        failure is not None
        and failure.kind in DIAGNOSED_HANDSHAKES
        and probe.tls is None
        and not probe.cert_problems
    ):
        return await diagnose_handshake(ctx, probe.server, address)
    if probe.cert_problems and probe.tls is not None and not ctx.settings.insecure:
        return await diagnose_certificate(ctx, probe.server, address, probe.tls.peer_cert_der)
    return None


async def _new_lock() -> asyncio.Lock:
    return asyncio.Lock()


def _transcript(ctx: CheckContext, host: str) -> Callable[[str], None] | None:
    """Lines of a session (which runs in a thread of its own) reach ``ctx.transcript`` on the
    caller's loop, in order and before the session's result."""
    if ctx.transcript is None:
        return None
    out = ctx.transcript
    loop = asyncio.get_running_loop()

    def forward(line: str) -> None:
        loop.call_soon_threadsafe(out, f"[{host}] {line}")

    return forward


async def _probe_address(ctx: CheckContext, probe: Probe, address: str) -> None:
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
    ctx: CheckContext, probe: Probe, address: str, *, verify_chain: bool, verify_host: bool
) -> bool:
    context = await session_context(ctx, verify_chain=verify_chain, verify_host=verify_host)
    transcript = _transcript(ctx, probe.server.host)

    async def run() -> bool:
        session = _session(ctx, probe.server, address, context, transcript)
        try:
            return await _one_session(ctx, probe, session, verify_chain, verify_host)
        finally:
            await session.quit(wait=False)

    # The session's replies are read on a loop of its own, never after a turn of the run's
    # DNS work; it touches only the probe, the settings and the secret. Its TLS close (the
    # server's close_notify comes a round trip after QUIT) ends there, after the result.
    return await on_own_loop(run, linger=CLOSE_LINGER)


def _session(
    ctx: CheckContext,
    server: OutboundServer,
    address: str,
    context: ssl.SSLContext,
    transcript: Callable[[str], None] | None,
) -> SmtpSession:
    return SmtpSession(
        server.host,
        server.port,
        tls_context=context,
        ehlo_name=socket.getfqdn() or "localhost",
        timeout=ctx.settings.timeout,
        address=address,
        transcript=transcript,
    )


def _note_before_tls(probe: Probe, session: SmtpSession) -> None:
    # A lenient session that failed before its first EHLO leaves what an earlier one learnt.
    if session.extensions_before_tls is not None:
        probe.before_tls = session.extensions_before_tls


async def _one_session(
    ctx: CheckContext, probe: Probe, session: SmtpSession, verify_chain: bool, verify_host: bool
) -> bool:
    """Run one session; True when nothing more can be learnt from another one."""
    try:
        probe.after_tls = await establish(session, probe.server.security)
    except SmtpFailure as failure:
        _note_before_tls(probe, session)
        if session.banner is not None:
            probe.banner = str(session.banner)
        if failure.kind is FailureKind.CERTIFICATE:
            assert failure.cert_problem is not None
            probe.cert_problems.append(failure.cert_problem)
            probe.cert_messages.append(failure.message)
            return False
        if (
            failure.kind in CONNECT_ERRORS and session.banner is None
        ) or failure.kind is FailureKind.BANNER_REJECTED:
            probe.connect_failure = failure
        else:
            probe.tls_failure = failure
        return True
    _note_before_tls(probe, session)
    probe.banner = str(session.banner) if session.banner else ""
    probe.tls = session.tls
    assert session.tls is not None
    if verify_chain and not ctx.settings.insecure:
        probe.chain_verified = True
        probe.hostname_verified = verify_host
    login = None
    if (verify_chain and verify_host) or ctx.settings.insecure:
        # AUTH goes out in the task's first step; the certificate (cryptography, ~10 ms of
        # CPU) is read during its round trip instead of before it.
        login = asyncio.ensure_future(_try_login(ctx, probe, session))
        await asyncio.sleep(0)
    try:
        if session.tls.peer_cert_der:
            probe.leaf = summarise_certificate(session.tls.peer_cert_der)
    finally:
        if login is not None:
            probe.login = await login
    return True


async def _try_login(ctx: CheckContext, probe: Probe, session: SmtpSession) -> LoginOutcome:
    server = probe.server
    assert session.tls is not None
    if not session.tls.version_ok:
        return LoginOutcome(LoginStep.TLS_TOO_OLD)
    offered = probe.after_tls.auth_mechanisms if probe.after_tls else frozenset()
    if sasl.choose_mechanism(server.auth, offered) is None:
        return LoginOutcome(LoginStep.NOT_OFFERED)
    if server.oauth is not None:
        if probe.token is None or probe.token.token is None:
            return LoginOutcome(LoginStep.NO_TOKEN)
        secret = probe.token.token.value
    else:
        try:
            # A password is an environment variable or a small file: read here, since a
            # thread would queue behind the run's pyspf/dkimpy threads.
            secret = outbound_credential(
                server,
                ctx.base_dir,
                ca_file=ctx.settings.ca_file,
                insecure=ctx.settings.insecure,
            )
        except SmtpconnError as exc:
            return LoginOutcome(LoginStep.SECRET_UNREADABLE, error=exc)
    try:
        reply = await login(session, server_spec(server), secret)
    except SmtpFailure as failure:
        return LoginOutcome(LoginStep.REFUSED, failure=failure)
    return LoginOutcome(LoginStep.ACCEPTED, reply=reply)
