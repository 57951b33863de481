"""What both listeners share: the aiosmtpd protocol with our AUTH, connection limits and session
tracking (for a clean shutdown), and the credential checker.

AUTH is handled here rather than by aiosmtpd's synchronous ``authenticator`` hook because a
scrypt check costs tens of milliseconds: it runs in a thread so one login never stalls the other
sessions. A check answers *which* login the credentials prove, with the support addresses it was
issued for (its scope); the session keeps it for the inbound RCPT policy. Successful checks are
remembered as an HMAC of (user, hash, password) under a key that lives only in this process's
memory, so a busy customer server does not pay scrypt per session and no clear password is ever
kept. The cache is bounded (least recently used logins go first), entries expire after
``SUCCESS_CACHE_TTL``, and
concurrent checks of the same credentials share one scrypt. Failures are counted per client IP;
past the limit the IP gets ``454`` and is disconnected until the window passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from base64 import b64decode
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, TLSSetupException, syntax

from smtpconn.message.escaping import has_controls
from smtpconn.profile.model import BareNewline
from smtpconn.profile.secrets import verify_password
from smtpconn.relay.config import Credential, InboundRoute
from smtpconn.relay.log import log_event
from smtpconn.relay.wire import (
    END_LINE,
    END_MARKER,
    HELO_REFUSED,
    MAIL_PATH_REFUSED,
    RCPT_PATH_REFUSED,
    DataReader,
    ReadStep,
    data_read_plan,
    envelope_refusal,
    header_refusal,
    simple_path,
    utf8_refusal,
)

MAX_AUTH_FAILURES_PER_SESSION = 3
SUCCESS_CACHE_SIZE = 1024  # remembered (user, password) digests; a profile has a few logins
# How long a verified password is taken without scrypt. A customer's server logs in on every
# connection (hundreds a minute under load) with the same password; past this age the next login
# pays one scrypt again, so a digest never outlives a working day's worth of memory dumps.
SUCCESS_CACHE_TTL = 900.0
# What aiosmtpd's own STARTTLS put in ``session.ssl`` (asyncio's SSL transport extras).
TLS_EXTRA = ("sslcontext", "ssl_object", "peercert", "cipher", "compression")


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    # aiosmtpd logs "Session.login_data is deprecated" on every successful AUTH, from its own
    # code: noise outside the relay's key=value log that no operator can act on.
    return "Session.login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_not_login_data_notice)


class CredentialChecker:
    """Checks (user, password) against scrypt hashes, with a keyed in-memory success cache and
    a per-IP failure limit."""

    def __init__(
        self,
        credentials: Callable[[], Sequence[Credential]],
        *,
        failures_allowed: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # LRU of successful digests -> when they were verified (monotonic clock)
        self._good: OrderedDict[bytes, float] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self.failures_allowed = failures_allowed
        self.window = window

    def _digest(self, username: str, hash_: str, password: bytes) -> bytes:
        # The hash is part of the key so rotating credentials in the profile invalidates the cache.
        material = username.encode() + b"\0" + hash_.encode() + b"\0" + password
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def blocked(self, ip: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        times = self._failures.get(ip)
        if not times:
            return False
        while times and now - times[0] > self.window:
            times.popleft()
        if not times:
            del self._failures[ip]
        return len(times) >= self.failures_allowed

    def record_failure(self, ip: str, now: float | None = None) -> None:
        self._failures[ip].append(time.monotonic() if now is None else now)

    async def check(self, username: str, password: bytes) -> Credential | None:
        """The login these credentials prove, with the addresses it may deliver to; None if
        they prove none. Every login of that user name is tried: when a hand-edited profile has
        the name under two hashes, the password decides which addresses are in scope."""
        wanted = username.encode("utf-8", "surrogateescape")
        candidates = [
            c
            for c in self._credentials()
            # Bytes: compare_digest refuses non-ASCII str, and a user name may be UTF-8.
            if hmac.compare_digest(c.username.encode("utf-8", "surrogateescape"), wanted)
        ]
        if not candidates:
            # Spend the same time as a real check so user names cannot be probed by timing.
            await asyncio.to_thread(verify_password, "x", _DUMMY_HASH)
            return None
        matched = [c for c in candidates if await self._proves(c, password)]
        return _merge(matched)

    async def _proves(self, credential: Credential, password: bytes) -> bool:
        # The cache only remembers that (user, hash, password) verified; the scope always comes
        # from the profile's current records, so it can never be served stale.
        digest = self._digest(credential.username, credential.password_hash, password)
        verified_at = self._good.get(digest)
        if verified_at is not None:
            if self._clock() - verified_at < SUCCESS_CACHE_TTL:
                self._good.move_to_end(digest)
                return True
            del self._good[digest]  # expired: prove it with scrypt again
        return await self._verify_once(digest, password, credential.password_hash)

    async def _verify_once(self, digest: bytes, password: bytes, hash_: str) -> bool:
        # A customer's server opens many sessions at once (20 in the benchmark): before, each
        # of them ran its own scrypt because the cache was only filled when the first check
        # came back. Identical checks in flight now share one scrypt.
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            ok = await asyncio.to_thread(_verify, password, hash_)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._pending[digest]
        if ok:
            self._good[digest] = self._clock()
            while len(self._good) > SUCCESS_CACHE_SIZE:
                self._good.popitem(last=False)
        future.set_result(ok)
        return ok


def _merge(matched: Sequence[Credential]) -> Credential | None:
    """One login out of every record the password proved (the union of their scopes)."""
    if len(matched) <= 1:
        return matched[0] if matched else None
    scopes = [c.scope for c in matched]
    union = (
        None if any(s is None for s in scopes) else frozenset().union(*(s or () for s in scopes))
    )
    previous = any(c.previous for c in matched)
    return Credential(matched[0].username, matched[0].password_hash, union, previous)


def _verify(password: bytes, hash_: str) -> bool:
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return verify_password(text, hash_)


# A hash of a random password nobody knows; only used to equalise timing for unknown users.
_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


class RelayLimits:
    """What all listeners share: how many sessions are open and how many DATA bytes are held in
    memory at once. Per-IP limits alone leave the relay open to many addresses at once, and a
    25 MB message per session adds up fast; beyond either cap a client gets ``421 4.3.2``."""

    def __init__(self, max_sessions: int, max_memory: int) -> None:
        self.max_sessions = max_sessions
        self.max_memory = max_memory
        self.sessions = 0
        self.memory = 0
        # Called whenever a session ends (the shared accept queue opens again: acceptor.py).
        self.on_session_end: list[Callable[[], None]] = []

    def session_ended(self) -> None:
        self.sessions -= 1
        for callback in list(self.on_session_end):
            callback()

    def reserve(self, size: int) -> bool:
        if self.memory + size > self.max_memory:
            return False
        self.memory += size
        return True

    def release(self, size: int) -> None:
        self.memory = max(0, self.memory - size)


class SessionTracker:
    """Every live connection of a listener, to close idle ones and await busy ones on stop."""

    def __init__(self, max_per_ip: int, limits: RelayLimits) -> None:
        self.max_per_ip = max_per_ip
        self.limits = limits
        self.sessions: set[RelaySMTP] = set()
        self.per_ip: dict[str, int] = defaultdict(int)
        self.closing = False

    def busy(self) -> list[RelaySMTP]:
        return [s for s in self.sessions if s.in_transaction]

    async def drain(self, grace: float) -> None:
        """Close idle sessions now, let sessions in a transaction finish (up to ``grace``)."""
        self.closing = True
        for session in list(self.sessions):
            if not session.in_transaction:
                session.close_now("421 4.3.2 Service shutting down, try again later")
        deadline = time.monotonic() + grace
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close_now("421 4.3.2 Service shutting down, try again later")


def peer_ip(peer: Any) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with asynchronous AUTH against a :class:`CredentialChecker`, per-IP and
    global connection limits, shutdown tracking, and our own DATA reading (CRLF.CRLF only, the
    bare-newline rule, a shared memory budget, an idle timer reset by progress and a total
    deadline). ``timeout`` (aiosmtpd's) is the idle timeout."""

    def __init__(
        self,
        handler: Any,
        *,
        checker: CredentialChecker | None,
        tracker: SessionTracker,
        listener: str,
        implicit_tls: bool = False,
        bare_newline: BareNewline = BareNewline.REJECT,
        data_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        self.checker = checker
        self.tracker = tracker
        self.listener = listener
        self.implicit_tls = implicit_tls
        self.bare_newline = bare_newline
        self.data_timeout = data_timeout
        self._in_data = False
        self.login_failures = 0
        self._login: tuple[Any, Credential] | None = None  # (session, the login it proved)
        self._counted_ip: str | None = None
        self._refused = False
        if checker is None:
            kwargs["auth_exclude_mechanism"] = ["PLAIN", "LOGIN"]
        # The implicit-TLS listener is encrypted from the first byte; aiosmtpd only knows about
        # STARTTLS, so its own "AUTH needs TLS" check is relaxed there and ours applies.
        # SMTPUTF8 (RFC 6531) is offered on every listener: UTF-8 addresses and headers are
        # carried as they are to the sink and the customer's server (see wire.utf8_refusal).
        kwargs.setdefault("enable_SMTPUTF8", True)
        super().__init__(
            handler,
            auth_require_tls=not implicit_tls,
            authenticator=lambda *a: AuthResult(success=False),
            **kwargs,
        )

    # -- connection bookkeeping -----------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        first = self._original_transport is None and self.transport is None
        if first:
            ip = peer_ip(transport.get_extra_info("peername"))
            refusal = self._refusal(ip)
            if refusal is not None:
                self._refused = True
                status, reason = refusal
                log_event("session.refused", listener=self.listener, client=ip, reason=reason)
                transport.write(f"421 {status} {reason}, try again later\r\n".encode())
                transport.close()
                return
            self._counted_ip = ip
            self.tracker.per_ip[ip] += 1
            self.tracker.limits.sessions += 1
            self.tracker.sessions.add(self)
        super().connection_made(transport)

    def _refusal(self, ip: str) -> tuple[str, str] | None:
        if self.tracker.closing:
            return "4.7.0", "shutting down"
        if self.tracker.per_ip[ip] >= self.tracker.max_per_ip:
            return "4.7.0", "too many connections"
        if self.tracker.limits.sessions >= self.tracker.limits.max_sessions:
            return "4.3.2", "too many sessions"
        return None

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._counted_ip is not None:
            self.tracker.per_ip[self._counted_ip] -= 1
            if self.tracker.per_ip[self._counted_ip] <= 0:
                del self.tracker.per_ip[self._counted_ip]
            self._counted_ip = None
            self.tracker.sessions.discard(self)
            self.tracker.limits.session_ended()
        super().connection_lost(error)

    def eof_received(self) -> bool:
        if not self._refused:
            super().eof_received()  # cancels the command loop
        # Always close, never keep the half-closed connection (aiosmtpd's StreamReaderProtocol
        # answer): the command loop's own close on cancellation never runs when the EOF comes
        # before its first step (uvloop: a client that closes as it connects), and the session
        # would stay counted against max_sessions until the idle timeout.
        return False

    @property
    def in_transaction(self) -> bool:
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_now(self, line: str) -> None:
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is not None and not transport.is_closing():
            transport.write(line.encode() + b"\r\n")
            transport.close()

    @property
    def client_ip(self) -> str:
        return self._counted_ip or "unknown"

    @property
    def is_tls(self) -> bool:
        return (
            self.transport is not None and self.transport.get_extra_info("ssl_object") is not None
        )

    def tls_details(self) -> tuple[str | None, str | None]:
        if self.transport is None:
            return None, None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None, None
        cipher = ssl_object.cipher()
        return ssl_object.version(), cipher[0] if cipher else None

    # -- STARTTLS -----------------------------------------------------------------------------

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        """STARTTLS through the event loop's own TLS (``loop.start_tls``: uvloop's C
        implementation under uvloop) rather than aiosmtpd's ``SSLProtocol`` built by hand in
        Python, which cost ~12 % of the loop under load. RFC 3207 stays as before: whatever the
        client pipelined after STARTTLS in clear text is discarded, the session starts over."""
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if self.is_tls:  # RFC 3207: never TLS inside TLS
            await self.push("554 5.5.1 Error: TLS already active")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        plain = self.transport
        assert plain is not None
        # Discarded here, before start_tls swaps the transport's protocol in the same step (no
        # loop turn in between), so no clear-text byte can arrive later; after the handshake
        # only decrypted bytes reach the reader, and a client may send them right away.
        self._reader._buffer.clear()  # type: ignore[attr-defined]
        self._original_transport = plain
        try:
            secure = await self.loop.start_tls(
                cast(asyncio.WriteTransport, plain), self, self.tls_context, server_side=True
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error
        if secure is None:  # the connection went away during the handshake
            raise TLSSetupException()
        self._tls_started(secure)

    def _tls_started(self, secure: asyncio.Transport) -> None:
        # What aiosmtpd's connection_made does for its own STARTTLS (RFC 3207 4.2: a new
        # session, nothing from before kept); our connection bookkeeping is not repeated.
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.session = self._create_session()
        self.session.peer = secure.get_extra_info("peername")
        self._reset_timeout()
        self._reader._transport = secure  # type: ignore[attr-defined]
        self._writer._transport = secure  # type: ignore[attr-defined]
        self._transport = secure  # StreamReaderProtocol's own reference
        self._over_ssl = True
        self.transport = secure
        # aiosmtpd tests "STARTTLS done" by this attribute (EHLO, AUTH, require_starttls).
        self._tls_protocol = cast(Any, secure)
        self.session.ssl = {key: secure.get_extra_info(key) for key in TLS_EXTRA}
        self._tls_handshake_okay = True

    # -- timeouts -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # In DATA every byte is progress: a slow but steady sender is not cut at the idle
        # timeout (the DATA deadline bounds a trickle). Commands only count when complete.
        if self._in_data:
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        self._cut("idle")

    def _cut(self, phase: str) -> None:
        log_event("session.timeout", listener=self.listener, client=self.client_ip, phase=phase)
        hostname = self.hostname
        self.close_now(f"421 4.4.2 {hostname} Error: timeout exceeded")

    # -- commands -----------------------------------------------------------------------------

    async def _refuse_command(
        self, command: str, reply: str, reason: str = "control-character"
    ) -> None:
        # The argument is not logged: it is exactly what must never reach a log raw.
        log_event(
            "session.command-refused",
            listener=self.listener,
            client=self.client_ip,
            command=command,
            reason=reason,
        )
        await self.push(reply)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        # Commands are read as UTF-8 (SMTPUTF8 is offered): broken bytes and Unicode controls
        # (has_controls covers them and the ASCII ones) are refused like ASCII controls.
        if hostname and has_controls(hostname):
            await self._refuse_command("HELO", HELO_REFUSED)
            return
        await super().smtp_HELO(hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and has_controls(hostname):  # as for HELO
            await self._refuse_command("EHLO", HELO_REFUSED)
            return
        await super().smtp_EHLO(hostname)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        reply = envelope_refusal(arg, path_reply=MAIL_PATH_REFUSED)
        if reply is not None:
            await self._refuse_command("MAIL", reply)
            return
        refused = utf8_refusal(arg, smtputf8=None, path_reply=MAIL_PATH_REFUSED)
        if refused is not None:
            await self._refuse_command("MAIL", *refused)
            return
        await super().smtp_MAIL(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = simple_path(arg) if arg else None
        if simple is None:
            found: tuple[str | None, str | None] = super()._getaddr(arg)
            return found
        local = simple[0].rpartition("@")[0]
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return simple

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        reply = envelope_refusal(arg, path_reply=RCPT_PATH_REFUSED)
        if reply is not None:
            await self._refuse_command("RCPT", reply)
            return
        declared = bool(self.envelope is not None and self.envelope.smtp_utf8)
        refused = utf8_refusal(arg, smtputf8=declared, path_reply=RCPT_PATH_REFUSED)
        if refused is not None:
            await self._refuse_command("RCPT", *refused)
            return
        await super().smtp_RCPT(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA (same checks, 354, 552 size limit, dot un-stuffing, handle_DATA),
        read by :class:`DataReader` so line endings, the memory budget and the timeouts are
        ours."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(
            size_limit=self.data_size_limit,
            line_limit=self.line_length_limit,
            normalize=self.bare_newline is BareNewline.NORMALIZE,
        )
        limits = self.tracker.limits
        reserved = 0
        deadline = self.loop.call_later(self.data_timeout, self._cut, "data")
        self._in_data = True
        tail = b"\r\n"  # the DATA command's own line end: the end line may come first
        try:
            while True:
                piece = await self._read_data_piece(data_read_plan(tail))
                tail = (tail + piece)[-4:]
                held = reader.held
                if reader.feed(piece):
                    break
                grown = reader.held - held
                if grown > 0:
                    if not limits.reserve(grown):
                        self._out_of_memory()
                        return
                    reserved += grown
            self._in_data = False
            deadline.cancel()
            self._reset_timeout()
            await self._finish_data(reader)
        finally:
            self._in_data = False
            deadline.cancel()
            limits.release(reserved)

    async def _read_data_piece(self, step: ReadStep) -> bytes:
        """The next bytes of DATA, never past its end (pipelined commands stay in the stream).
        aiosmtpd read DATA line by line (about 150 reads of a 10 KB message); a BULK read takes
        everything buffered up to CRLF.CRLF (benchmarks/README.md)."""
        if step is ReadStep.HEAD:
            return await self._reader.readexactly(len(END_LINE))
        try:
            return await self._reader.readuntil(b"\n" if step is ReadStep.LINE else END_MARKER)
        except asyncio.LimitOverrunError as exc:
            # No end yet within the stream's limit: take what is safe to take (the reader
            # keeps back any bytes that may begin the separator).
            return await self._reader.read(exc.consumed)

    def _out_of_memory(self) -> None:
        log_event(
            "session.refused",
            listener=self.listener,
            client=self.client_ip,
            reason="memory budget exhausted",
        )
        self.close_now("421 4.3.2 Too much mail in progress, try again later")

    async def _finish_data(self, reader: DataReader) -> None:
        assert self.envelope is not None
        if reader.problem is not None:
            if reader.problem.startswith("550 5.6.11"):
                log_event(
                    "session.data-refused",
                    listener=self.listener,
                    client=self.client_ip,
                    reason="bare-newline",
                )
            self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
            await self.push(reader.problem)
            return
        content = reader.content()
        refusal = header_refusal(content, smtputf8=bool(self.envelope.smtp_utf8))
        if refusal is not None:
            log_event(
                "session.data-refused",
                listener=self.listener,
                client=self.client_ip,
                reason="header-not-utf8",
            )
            self.envelope = self._create_envelope()
            await self.push(refusal)
            return
        if self._decode_data:
            try:
                self.envelope.content = content.decode(
                    "utf-8" if self.enable_SMTPUTF8 else "ascii",
                    "surrogateescape" if self.enable_SMTPUTF8 else "strict",
                )
            except UnicodeDecodeError:
                await self.push("500 Error: strict ASCII mode")
                return
        else:
            self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
        await self.push("250 OK" if status is MISSING else status)

    # -- AUTH ---------------------------------------------------------------------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check("PLAIN", parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check("LOGIN", login, password)

    async def _check(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        ip = self.client_ip
        username = login.decode("utf-8", "replace")
        if self.checker is None:
            return AuthResult(success=False, handled=False)
        if self.implicit_tls is False and not self.is_tls:  # defence in depth
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return AuthResult(success=False, handled=True)
        if self.checker.blocked(ip):
            log_event("auth.blocked", listener=self.listener, client=ip, user=username)
            self.close_now("454 4.7.0 Too many failed authentications; try again later")
            return AuthResult(success=False, handled=True)
        credential = await self.checker.check(username, password)
        if credential is not None:
            scope = None if credential.scope is None else len(credential.scope)
            log_event(
                "auth.ok",
                listener=self.listener,
                client=ip,
                user=username,
                mech=mechanism,
                **({} if scope is None else {"scope": scope}),
                credential="previous" if credential.previous else "current",
            )
            # Bound to this session object: STARTTLS or a new connection starts unauthenticated.
            self._login = (self.session, credential)
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        self.checker.record_failure(ip)
        self.login_failures += 1
        log_event("auth.failed", listener=self.listener, client=ip, user=username, mech=mechanism)
        if self.login_failures >= MAX_AUTH_FAILURES_PER_SESSION or self.checker.blocked(ip):
            self.close_now("421 4.7.0 Too many failed authentications")
            return AuthResult(success=False, handled=True)
        # handled=False: aiosmtpd answers 535 5.7.8 itself.
        return AuthResult(success=False, handled=False)

    @property
    def credential(self) -> Credential | None:
        """The login this session proved (with its scope), or None if it has not logged in."""
        if self._login is None or self.session is None or not self.session.authenticated:
            return None
        session, credential = self._login
        return credential if session is self.session else None

    def may_deliver_to(self, route: InboundRoute) -> bool:
        """Whether this session's login was issued for ``route``'s address (False without one)."""
        credential = self.credential
        return credential is not None and credential.covers(route)

    @property
    def login_user(self) -> str | None:
        if self.session is None or not self.session.authenticated:
            return None
        data = self.session.auth_data
        login = getattr(data, "login", None)
        return login.decode("utf-8", "replace") if isinstance(login, bytes) else None
