"""Outbound: the help desk's replies, from the loopback submission listener to the customer's
server.

Submission policy: the envelope sender must be a support address of the profile that has an
outbound server (``550 5.7.1`` otherwise: the relay never sends as anyone else); AUTH is required
when ``relay.submission_username`` / ``submission_password_hash`` are set (and then only over
TLS). The message is DKIM-signed (when the address has ``[addresses.dkim]``) *before* it is
spooled, so what is acknowledged is exactly what will be sent.

Delivery goes through the shared client policy (``smtpconn.smtp.delivery``: TLS + AUTH, never
clear text), over cached sessions (:mod:`smtpconn.relay.sessions`: replies to the same customer
server share one authenticated connection, pipelined when the server offers it), paced by the
server's lane (:mod:`smtpconn.relay.lanes`): split into transactions of
``recipients_per_message``.
Per recipient: accepted → done; a throttling reply (:func:`smtpconn.smtp.reply_catalogue.
is_throttling`, whatever its code) → the lane backs off, the reply waits for it, never a
bounce; 5xx → bounce; 4xx, connection, TLS or AUTH problems → retry with exponential back-off
until the retry window ends, then bounce. The retry window counts only real failures: it starts
at a reply's first one, and time the reply then waits for its lane (a throttle, the daily budget,
the per-minute rate) is not counted; a wait for the lane is not an attempt either. Bounces are
RFC 3464 reports to the support address, handed to the help desk through the sink: a failed
reply is never dropped silently. The bounce is spooled before the reply is forgotten, so a crash
in between can at worst produce a second bounce.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from smtpconn.dns.resolvers import resolve_host
from smtpconn.errors import SmtpconnFailure, UsageError
from smtpconn.message.tag import tag_value
from smtpconn.oauth.errors import OAuthFailure
from smtpconn.profile.credentials import Credentials
from smtpconn.profile.model import OutboundServer, SupportAddress
from smtpconn.profile.wire import server_spec, sign_for
from smtpconn.relay.config import RETRY_CAP, RelayConfig
from smtpconn.relay.dsn import FailedRecipient, build_dsn
from smtpconn.relay.lanes import Lane, Lanes
from smtpconn.relay.log import log_event
from smtpconn.relay.server import RelaySMTP
from smtpconn.relay.sessions import SessionPool
from smtpconn.relay.spool import (
    Envelope,
    OnStored,
    RetryState,
    Spool,
    SpoolEntry,
    backoff_delay,
    new_id,
)
from smtpconn.relay.state import TOKEN_EVENT
from smtpconn.relay.tagging import prepend
from smtpconn.relay.worker import Attempted
from smtpconn.smtp.failures import StageName
from smtpconn.smtp.replies import Reply
from smtpconn.smtp.reply_catalogue import annotated, enhanced_code, explain, is_throttling

# Recipients per submitted reply (Postfix's smtpd_recipient_limit default). The customer's
# server may allow fewer per transaction: the outbound side splits (recipients_per_message).
MAX_RECIPIENTS = 1000
# Longest the delivery waits in place for a lane's rate before a further transaction of a split
# reply; beyond it the rest is deferred and the slot freed.
MAX_PACE = 30.0


class Result(Protocol):
    @property
    def recipients(self) -> list[Any]: ...


Deliverer = Callable[..., Awaitable[Result]]


class SubmissionHandler:
    def __init__(
        self,
        config: RelayConfig,
        spool: Spool,
        on_stored: OnStored,
    ) -> None:
        self.config = config
        self.spool = spool
        self.on_stored = on_stored

    async def handle_MAIL(
        self, server: RelaySMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.config.submission_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        entry = self.config.sender_address(address)
        if entry is None:
            log_event(
                "submission.refused",
                client=server.client_ip,
                mail_from=address,
                reason="unknown-sender",
            )
            return f"550 5.7.1 <{address}>: not a support address with an outbound server here"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: RelaySMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if "@" not in address or len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients" if "@" in address else "501 5.1.3 Bad address"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: RelaySMTP, session: Any, envelope: Any) -> str:
        entry = self.config.sender_address(envelope.mail_from)
        if entry is None:
            return "550 5.7.1 Unknown sender"
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            # No DKIM key, nothing to sign: no trip to a worker thread for it.
            message = (
                raw
                if entry.dkim is None or entry.dkim.server_signs
                else await asyncio.to_thread(sign_for, raw, entry, self.config.base_dir)
            )
        except Exception as exc:  # a bad key must not send unsigned mail behind our back
            log_event(
                "submission.dkim-failed",
                logging.ERROR,
                mail_from=envelope.mail_from,
                error=str(exc),
            )
            return "451 4.7.0 DKIM signing failed; see the relay log"
        meta: dict[str, Any] = {
            "support_address": entry.address.ascii,
            "client_ip": server.client_ip,
            "auth_user": server.login_user or "",
            # The lane it was queued for: `queue list` shows that server's throttle.
            "server": entry.outbound.lane if entry.outbound is not None else "",
        }
        if envelope.smtp_utf8:
            # Asked of the customer's server only then (or for a UTF-8 address): never
            # guessed from the content (smtp.session.needs_smtputf8).
            meta["smtputf8"] = True
        try:
            [stored] = await asyncio.to_thread(
                self.spool.put_many,
                [
                    (
                        Envelope(
                            "outbound",
                            envelope.mail_from,
                            tuple(envelope.rcpt_tos),
                            time.time(),
                            meta,
                        ),
                        message,
                        None,
                    )
                ],
                # Kept for the first delivery attempt, which then reads nothing back.
                keep=True,
            )
        except OSError as exc:
            log_event("submission.store-failed", logging.ERROR, error=exc.strerror)
            return "451 4.3.0 Could not store the message; try again later"
        log_event(
            "submission.accepted",
            id=stored.id,
            mail_from=envelope.mail_from,
            rcpts=",".join(envelope.rcpt_tos),
            size=len(message),
            signed=entry.dkim is not None,
        )
        self.on_stored("outbound", [stored])
        return f"250 2.0.0 OK queued as {stored.id}"


class _NoCredential(SmtpconnFailure):
    """No secret or token to log in with now (the text says why): the reply is deferred."""


def _auth_refused(result: Result) -> bool:
    failure = getattr(result, "failure", None)
    reply = getattr(failure, "reply", None)
    return (
        failure is not None
        and failure.stage is StageName.AUTH
        and reply is not None
        and reply.code == 535
    )


def _credential_problem(exc: UsageError | OAuthFailure) -> str:
    if isinstance(exc, OAuthFailure):
        return f"no OAuth token: {exc.message}" + (f"; fix: {exc.fix}" if exc.fix else "")
    return exc.message


@dataclass(slots=True)
class _Run:
    """What one delivery attempt of a reply found out, recipient by recipient."""

    state: RetryState
    bounces: list[FailedRecipient] = field(default_factory=list)
    temporary: list[tuple[str, str]] = field(default_factory=list)  # real failures: retried
    waiting: list[tuple[str, str]] = field(default_factory=list)  # waits for the lane only
    throttled: str | None = None  # the throttling reply, when the server gave one
    retry_at: float = 0.0  # set by a throttle or a spent budget: retry then, not by back-off
    wait_reason: str = ""


def _chunks(recipients: list[str], size: int | None) -> list[list[str]]:
    if not size or len(recipients) <= size:
        return [recipients]
    return [recipients[i : i + size] for i in range(0, len(recipients), size)]


def _server_replies(outcome: Any, result: Result) -> list[Reply]:
    """The server's replies that decided a recipient's failure: its own, and the session's
    failure (a 421 greeting, a refused MAIL or DATA) when that is where its code came from."""
    replies = []
    if outcome.code:
        replies.append(Reply(int(outcome.code), (str(outcome.text),)))
    failure = getattr(result, "failure", None)
    reply = getattr(failure, "reply", None)
    if reply is not None and reply.code == outcome.code:
        replies.append(reply)
    return replies


def _throttling(outcome: Any, result: Result) -> bool:
    """Whether a recipient's failure is the server throttling the sender."""
    return any(is_throttling(reply) for reply in _server_replies(outcome, result))


def _explained(outcome: Any, result: Result) -> str:
    """The server's reply as logged and put in a DSN: with the reply-code catalogue's cause and
    fix when it knows a refusal (one line; the reply text is escaped where it is written)."""
    plain = f"{outcome.code or ''} {outcome.text}".strip()
    if outcome.accepted:
        return plain
    for reply in reversed(_server_replies(outcome, result)):
        meaning = explain(reply)
        if meaning is not None:
            return annotated(plain, meaning)
    return plain


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class OutboundDelivery:
    """Delivers one spooled reply, records the outcome, bounces what failed for good."""

    def __init__(
        self,
        config: RelayConfig,
        spool: Spool,
        deliverer: Deliverer | SessionPool,
        tls_context: ssl.SSLContext,
        on_stored: OnStored,
        lanes: Lanes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.spool = spool
        self.lanes = lanes
        self.deliverer = deliverer
        self.tls_context = tls_context
        self.on_stored = on_stored
        # One token source per address: its token is cached and refreshed before it expires.
        self.credentials = Credentials(
            config.base_dir, ca_file=config.settings.ca_file, insecure=config.settings.insecure
        )
        self._token_expiry: dict[str, float] = {}  # support address -> last expiry logged

    async def __call__(self, entry: SpoolEntry) -> Attempted:
        envelope = entry.envelope
        fresh = self.spool.take_fresh(entry)
        if fresh is not None:
            message, state = fresh, RetryState()  # first attempt: no state written yet
        else:
            # One trip to a worker thread for both (each trip costs the loop ~0.1 ms of CPU).
            message, state = await asyncio.to_thread(self.spool.message_and_state, entry)
        pending = [r for r in envelope.rcpts if r not in state.done]
        support = self.config.sender_address(envelope.mail_from)
        _resume_clock(state, self.clock())
        run = _Run(state)
        if support is None or support.outbound is None:
            run.bounces = [
                FailedRecipient(
                    r, "5.7.1", "the sender is no longer a support address of this relay"
                )
                for r in pending
            ]
        else:
            await self._send_split(entry, support, pending, run, message)
        return await self._settle(entry, run)

    async def _send_split(
        self,
        entry: SpoolEntry,
        support: SupportAddress,
        pending: list[str],
        run: _Run,
        message: bytes,
    ) -> None:
        """One transaction per ``recipients_per_message`` recipients, paced by the lane; what
        one accepted is recorded before the next starts, so a retry (or a restart) never sends
        to a recipient twice. A throttled server gets nothing more until its lane's back-off."""
        server = support.outbound
        assert server is not None
        lane = self.lanes.lane(server.lane) if self.lanes is not None else None
        size = (lane.limits if lane is not None else server.limits).recipients_per_message
        chunks = _chunks(pending, size)
        for index, chunk in enumerate(chunks):
            rest = [r for later in chunks[index:] for r in later]
            if not await self._pace(lane, entry.id, len(chunk), run):
                run.waiting += [(r, run.wait_reason) for r in rest]
                return
            result = await self._send(
                server,
                support.address.ascii,
                entry.envelope.mail_from,
                chunk,
                message,
                smtputf8=bool(entry.envelope.meta.get("smtputf8")),
            )
            if isinstance(result, str):
                # No credential now defers the reply (never a bounce): `smtpconn oauth login`
                # or the provider's recovery lets the next attempt through, without a restart.
                run.temporary += [(r, result) for r in rest]
                if lane is not None:
                    lane.settle(self.clock(), entry.id, 0)
                return
            self._record(entry, server, result, run, lane)
            if run.throttled is not None:
                later = [r for c in chunks[index + 1 :] for r in c]
                run.waiting += [(r, f"not sent: {run.throttled}") for r in later]
                return
            if index + 1 < len(chunks):
                await asyncio.to_thread(self.spool.save_state, entry, run.state)

    async def _pace(self, lane: Lane | None, owner: str, recipients: int, run: _Run) -> bool:
        """Reserve the lane for a transaction of ``recipients``, waiting for its rate when that
        is short; False when the wait is long (a daily budget, a throttle): the rest is retried
        when it ends. The worker reserved the first transaction when it launched the delivery."""
        if lane is None:
            return True
        while True:
            now = self.clock()
            # Checked and taken on one turn of the event loop: no other delivery in between.
            wait = lane.claim(now, owner, recipients)
            if wait <= 0:
                return True
            if wait > MAX_PACE:
                # inf: only transactions under way can free the budget; look again soon.
                wait = wait if math.isfinite(wait) else float(self.config.retry_initial)
                run.retry_at = max(run.retry_at, now + wait)
                run.wait_reason = f"{lane.key}: sending limit reached, waiting {int(wait)}s"
                return False
            await asyncio.sleep(wait)

    def _record(
        self,
        entry: SpoolEntry,
        server: OutboundServer,
        result: Result,
        run: _Run,
        lane: Lane | None,
    ) -> None:
        accepted = 0
        for outcome in result.recipients:
            reply = _explained(outcome, result)
            if outcome.accepted:
                accepted += 1
                run.state.done.append(outcome.recipient)
                log_event(
                    "outbound.delivered",
                    id=entry.id,
                    rcpt=outcome.recipient,
                    server=server.lane,
                    reply=reply,
                )
            elif _throttling(outcome, result):
                # A quota or rate limit of the sender, whatever its code: never a bounce.
                run.throttled = reply
                run.waiting.append((outcome.recipient, reply))
            elif outcome.permanent:
                run.bounces.append(
                    FailedRecipient(outcome.recipient, _status(outcome, result), reply)
                )
            else:
                run.temporary.append((outcome.recipient, reply))
        if lane is None or self.lanes is None:
            return
        now = self.clock()
        if run.throttled is None and accepted:
            lane.delivered(now, accepted, entry.id)
        else:
            lane.settle(now, entry.id, accepted)
        if run.throttled is not None:
            until = lane.throttle(now, run.throttled, self.config.retry_initial)
            run.retry_at = max(run.retry_at, until)
            log_event(
                "outbound.throttled",
                logging.WARNING,
                id=entry.id,
                server=lane.key,
                until=_iso(until),
                reply=run.throttled,
            )
        self.lanes.changed()

    async def _settle(self, entry: SpoolEntry, run: _Run) -> Attempted:
        """Bounce what failed for good, forget the reply when nothing is left, else defer it."""
        state = run.state
        now = self.clock()
        if run.temporary and self._window_ended(state, now):
            run.bounces += [
                FailedRecipient(r, "4.4.7", f"retry window ended; last error: {e}")
                for r, e in run.temporary
            ]
            run.temporary = []
        if run.bounces:
            await self._bounce(entry, run.bounces)
            state.done += [b.recipient for b in run.bounces]
        deferred = run.temporary + run.waiting
        if not deferred:
            await asyncio.to_thread(self.spool.remove, entry)
            return Attempted(None)
        # Only a real failure is an attempt: a wait for the lane neither lengthens the back-off
        # nor runs the retry window down (from ``pause_from`` until the next attempt).
        if run.temporary:
            state.attempts += 1
        state.last_error = "; ".join(f"{r}: {e}" for r, e in deferred)[:1000]
        delay = backoff_delay(max(1, state.attempts), self.config.retry_initial, RETRY_CAP)
        state.pause_from = now + delay if run.temporary else now
        # A throttled lane or a spent sending budget decides when, not the message's own count.
        state.next_attempt = run.retry_at or now + delay
        state.throttled_until = run.retry_at if run.throttled is not None else 0.0
        await asyncio.to_thread(self.spool.save_state, entry, state)
        log_event(
            "outbound.deferred",
            logging.WARNING,
            id=entry.id,
            rcpts=",".join(r for r, _ in deferred),
            error=state.last_error,
            attempts=state.attempts,
            retry_in=round(state.next_attempt - now, 3),
            throttled=_iso(state.throttled_until) if state.throttled_until else None,
        )
        return Attempted(state)

    def _window_ended(self, state: RetryState, now: float) -> bool:
        """Whether the retry window is over, counting real failures only: from the first one,
        less the time the reply waited for its lane since. The first failure starts it."""
        if not state.failing_since:
            state.failing_since = now
        return now - state.failing_since - state.paced_for > self.config.retry_window

    async def _send(
        self,
        server: OutboundServer,
        address: str,
        mail_from: str,
        rcpts: list[str],
        message: bytes,
        *,
        smtputf8: bool,
    ) -> Result | str:
        """Deliver with the server's credential; a token the server refuses (535) is dropped
        and a new one tried once, since the provider may have revoked it before its expiry.
        Returns why no credential could be had instead of a result."""

        async def secret() -> str:
            # Asked only when a new connection must log in: a kept one is authenticated
            # already (one worker-thread trip less per reply).
            try:
                secret, expires = await asyncio.to_thread(self._credential, server)
            except (UsageError, OAuthFailure) as exc:
                raise _NoCredential(_credential_problem(exc)) from None
            self._note_token(address, server, expires)
            return secret

        for attempt in (1, 2):
            try:
                result = await self._deliver(
                    server, secret, mail_from, rcpts, message, smtputf8=smtputf8
                )
            except _NoCredential as exc:
                return exc.message
            if attempt == 1 and server.oauth is not None and _auth_refused(result):
                self.credentials.invalidate(server)
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _credential(self, server: OutboundServer) -> tuple[str, float | None]:
        """The secret to log in with and, for an OAuth token, when it expires (blocking)."""
        source = self.credentials.source(server)
        if source is None:
            return self.credentials.secret(server), None
        token = source.token()
        return token.value, token.expires_at

    def _note_token(self, address: str, server: OutboundServer, expires: float | None) -> None:
        """One event per token obtained or refreshed (a new expiry), never per delivery: status
        and metrics read the expiry from it. The token itself is never logged."""
        if expires is None or self._token_expiry.get(address) == expires:
            return
        self._token_expiry[address] = expires
        log_event(
            TOKEN_EVENT,
            address=address,
            server=f"{server.host}:{server.port}",
            expires=datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds"),
        )

    async def _deliver(
        self,
        server: OutboundServer,
        secret: Callable[[], Awaitable[str]],
        mail_from: str,
        rcpts: list[str],
        message: bytes,
        *,
        smtputf8: bool,
    ) -> Result:
        settings = self.config.settings
        if isinstance(self.deliverer, SessionPool):
            return await self.deliverer.deliver(
                server,
                secret,
                mail_from,
                rcpts,
                message,
                resolve=lambda: resolve_host(
                    server.host, settings.resolvers, timeout=settings.timeout
                ),
                tls_context=self.tls_context,
                ehlo_name=self.config.hostname,
                timeout=settings.timeout,
                max_connections=(
                    self.lanes.lane(server.lane) if self.lanes is not None else server
                ).limits.max_connections,
                smtputf8=smtputf8,
            )
        return await self.deliverer(
            server_spec(server),
            await secret(),
            mail_from,
            rcpts,
            message,
            tls_context=self.tls_context,
            ehlo_name=self.config.hostname,
            timeout=settings.timeout,
            # The customer's server is found through the configured resolver, like every other
            # name smtpconn looks up (--resolver / SMTPCONN_RESOLVER).
            address=await resolve_host(server.host, settings.resolvers, timeout=settings.timeout),
            smtputf8=smtputf8,
        )

    async def _bounce(self, entry: SpoolEntry, failures: list[FailedRecipient]) -> None:
        envelope = entry.envelope
        for failure in failures:
            log_event(
                "outbound.bounced",
                logging.WARNING,
                id=entry.id,
                rcpt=failure.recipient,
                status=failure.status,
                reason=failure.diagnostic,
            )
        if not envelope.mail_from:
            return  # never bounce a bounce (RFC 5321 §4.5.5)
        original = await asyncio.to_thread(self.spool.message, entry)
        dsn = build_dsn(
            reporting_mta=self.config.hostname,
            sender=envelope.mail_from,
            original=original,
            arrival=envelope.received_at,
            failures=failures,
        )
        route = self.config.route_for(envelope.mail_from)
        mode = route.address.mode.value if route else "outbound-only"
        dsn = prepend(dsn, f"X-Smtpconn-Tag: {tag_value(True, mode, 'relay-dsn')}")
        meta = {
            "tag": "authenticated",
            "mode": mode,
            "origin": "relay-dsn",
            "support_address": envelope.mail_from,
            "bounce_of": entry.id,
        }
        stored = await asyncio.to_thread(
            self.spool.put_many,
            [(Envelope("inbound", "", (envelope.mail_from,), time.time(), meta), dsn, new_id())],
        )
        self.on_stored("inbound", stored)


def _resume_clock(state: RetryState, now: float) -> None:
    """An attempt starts: the time since ``pause_from`` was a wait for the lane (a throttle,
    the budget, or a lane too busy to start the retry when it was due): off the retry window."""
    if state.pause_from and state.failing_since:
        state.paced_for += max(0.0, now - state.pause_from)
    state.pause_from = 0.0


def _status(outcome: Any, result: Result) -> str:
    """The enhanced status code (RFC 3463) of a permanent failure: the server's when it gave
    one, else the one our account of the failure names (5.6.7 for a server without SMTPUTF8),
    else the generic 5.0.0."""
    own = Reply(int(outcome.code or 0), (str(outcome.text),))
    for reply in [*_server_replies(outcome, result), own]:
        status = enhanced_code(reply, anywhere=reply is own)
        if status.startswith("5."):
            return status
    return "5.0.0"


__all__ = ["Deliverer", "OutboundDelivery", "RetryState", "SubmissionHandler"]
