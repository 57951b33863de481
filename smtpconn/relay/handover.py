"""Inbound delivery: hand each spooled inbound message to the sink.

``Authentication-Results`` is computed here (bounded by the timeout), not before the ``250``, so
acknowledging never waits for DNS. A temporary sink failure is retried with back-off for ever
(past the retry window the message is *held* and logged as an error: the help desk's side is
ours to fix, and nobody else would get a bounce); a permanent one holds the message at once, and
so does an unexpected error raised while handing this message over (its data is at fault: it
would fail the same way every time).
Held messages are listed by ``smtpconn queue list`` and released with ``smtpconn queue retry``.

The tag header is written here too (for copies the listener spooled with ``tag_at_handover``):
unauthenticated mail gets ``auth=pass|fail|none`` from the same evaluation, and an address whose
``unauthenticated_policy`` is ``hold`` holds what fails (:mod:`smtpconn.relay.policy`). It is
decided once, on the first hand-over: the Authentication-Results and ``auth=`` are kept in the
entry's retry state and every later attempt (after a sink failure, or the ``smtpconn queue
retry`` that releases a held message) delivers with them, never judging again. A tag other than
exactly ``authenticated`` is treated as unauthenticated (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from smtpconn.dns import CachingResolver
from smtpconn.message.escaping import escape_controls
from smtpconn.message.tag import AUTHENTICATED, TAG_HEADER, tag_value
from smtpconn.relay.authres import AuthInput, RecentResults, assess, relay_resolver
from smtpconn.relay.config import RETRY_CAP, RelayConfig
from smtpconn.relay.log import log_event
from smtpconn.relay.policy import Action, judge, policy_of
from smtpconn.relay.sinks.base import Sink, SinkError, SinkItem
from smtpconn.relay.sinks.maildir import MaildirSink
from smtpconn.relay.spool import RetryState, Spool, SpoolEntry, backoff_delay
from smtpconn.relay.tagging import prepend
from smtpconn.relay.worker import Attempted


class _Removal:
    """The spool entry's removal after the Maildir sink holds the message (without a folder
    fsync: the sink finds its copy again by spool id). An error is kept for the loop to raise,
    never mistaken for the sink's."""

    def __init__(self, spool: Spool, entry: SpoolEntry) -> None:
        self.spool = spool
        self.entry = entry
        self.error: OSError | None = None

    def __call__(self) -> None:
        try:
            self.spool.remove(self.entry, durably=False)
        except OSError as exc:
            self.error = exc

    def names(self) -> list[Path] | None:
        return self.spool.removal_names(self.entry)

    def failed(self, error: OSError) -> None:
        self.error = error


class SinkHandover:
    def __init__(self, config: RelayConfig, spool: Spool, sink: Sink) -> None:
        self.config = config
        self.spool = spool
        self.sink = sink
        self.auth_timeout = min(config.settings.timeout, 10.0)
        self._started = time.time()
        self._resolver = relay_resolver(config.settings.resolvers, self.auth_timeout)
        self._recent = RecentResults()  # a busy sender's messages share SPF and DMARC lookups

    async def __call__(self, entry: SpoolEntry) -> Attempted:
        envelope = entry.envelope
        # aiosmtpd reports the null reverse-path as "<>"; the spool's word for it is "".
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        fresh = self.spool.take_fresh(entry)
        if fresh is None:
            message, state = await asyncio.to_thread(self.spool.message_and_state, entry)
        else:  # spooled just now by this process and never handed over: no retry state yet
            message, state = fresh, RetryState()
        meta = dict(envelope.meta)
        headers: list[str] = []
        if meta.get("client_ip") and meta.get("origin") != "relay-dsn":
            verdict = await self._authenticate(mail_from, message, meta, state)
            if isinstance(verdict, str):
                auth = str(meta.get("auth", ""))
                await asyncio.to_thread(self._hold_by_policy, entry, state, verdict, auth)
                return Attempted(state)
            headers = verdict
        if headers:
            message = prepend(message, *headers)
        # The hand-over's own bookkeeping is not the help desk's metadata (webhook JSON).
        meta.pop("authres", None)
        meta.pop("tag_at_handover", None)
        item = SinkItem(
            id=entry.id,
            mail_from=mail_from,
            rcpt=envelope.rcpts[0] if envelope.rcpts else "",
            message=message,
            meta=meta,
            # Spooled by an earlier run (it may have crashed after the hand-over), or tried
            # before: the sink must check for a copy it already has.
            maybe_delivered=state.attempts > 0 or envelope.received_at < self._started,
        )
        removal: _Removal | None = None
        try:
            if isinstance(self.sink, MaildirSink):
                # The removal follows the Maildir copy once it is durable, done by whoever made
                # the copy (the delivery agent, or a worker thread): one trip per hand-over.
                removal = _Removal(self.spool, entry)
                await self.sink.deliver(item, then=removal)
            else:
                await self.sink.deliver(item)
        except SinkError as exc:
            await asyncio.to_thread(self._failed, entry, state, str(exc), exc.permanent)
            return Attempted(state)
        except Exception as exc:
            # Sinks report what the help desk side did as SinkError; anything else was raised by
            # this message's own data (a NUL, an undecodable address …) and fails the same way
            # on every attempt: hold it for an administrator instead of retrying for ever.
            error = f"{self.sink.kind} sink failed on this message: {type(exc).__name__}: {exc}"
            await asyncio.to_thread(self._failed, entry, state, error, True)
            return Attempted(state)
        # The sink holds it durably now. A sink that finds its own copy again needs no folder
        # fsync after the unlink: if a power cut undoes it, the next run hands the message over
        # again (maybe_delivered: spooled before that run started) and the sink skips it.
        # A sink that does not say (a test double, a sink added later) gets the durable removal.
        if removal is None:
            dedupes = bool(getattr(self.sink, "dedupes", False))
            await asyncio.to_thread(self.spool.remove, entry, durably=not dedupes)
        elif removal.error is not None:
            raise removal.error
        log_event(
            "inbound.delivered",
            id=entry.id,
            sink=self.sink.kind,
            rcpt=item.rcpt,
            tag=meta.get("tag"),
            **({"auth": meta["auth"]} if meta.get("auth") else {}),
            attempts=state.attempts + 1,
            delay=time.time() - envelope.received_at,
        )
        return Attempted(None)

    async def _authenticate(
        self, mail_from: str, message: bytes, meta: dict[str, Any], state: RetryState
    ) -> list[str] | str:
        """The headers to put on top (Authentication-Results, and the tag when it is ours to
        write), or the reason to hold the message under its address's policy. ``meta`` gains
        ``auth`` for unauthenticated mail."""
        unauthenticated = meta.get("tag") != AUTHENTICATED  # fail closed on an odd value
        precomputed = meta.get("authres")
        if isinstance(precomputed, str):  # judged before the 250 (a reject policy)
            header = precomputed
        elif state.authres is not None:  # judged on an earlier attempt: decided once
            header = state.authres
            if state.auth:
                meta["auth"] = state.auth
        else:
            header, hold = await self._judge(mail_from, message, meta)
            # Kept in the state the failure/hold path saves (a lost update re-judges, no more).
            state.authres, state.auth = header, meta.get("auth")
            if hold is not None:
                return hold
        if not meta.get("tag_at_handover"):
            return [header]  # spooled by an older relay, tagged then
        tag = tag_value(not unauthenticated, str(meta.get("mode", "")), auth=meta.get("auth"))
        return [header, f"{TAG_HEADER}: {tag}"]

    async def _judge(
        self, mail_from: str, message: bytes, meta: dict[str, Any]
    ) -> tuple[str, str | None]:
        """(Authentication-Results, the reason to hold it or None), the first time this message
        is handed over; ``meta`` gains ``auth`` for unauthenticated mail."""
        verdicts = await assess(
            AuthInput(
                client_ip=str(meta["client_ip"]),
                helo=str(meta.get("helo", "")),
                mail_from=mail_from,
                message=message,
            ),
            self.auth_timeout,
            CachingResolver(self._resolver),
            self._recent,
        )
        header = verdicts.header(self.config.hostname, str(meta["client_ip"]))
        if meta.get("tag") == AUTHENTICATED or not meta.get("tag_at_handover"):
            return header, None
        route = self.config.route_for(str(meta.get("support_address", "")))
        policy, sealers = policy_of(route.address if route else None)
        judgement = judge(verdicts, sealers)
        meta["auth"] = judgement.auth.value
        if judgement.action(policy) is Action.HOLD:
            return header, f"held by unauthenticated_policy=hold: {judgement.reason}"
        return header, None

    def _hold_by_policy(self, entry: SpoolEntry, state: RetryState, reason: str, auth: str) -> None:
        # Counted as an attempt; the judgement is in the state, so what `queue retry` releases
        # is delivered with it, not judged again.
        state.attempts += 1
        state.held = True
        state.last_error = escape_controls(reason)
        self.spool.save_state(entry, state)
        log_event(
            "inbound.held",
            id=entry.id,
            rcpt=entry.envelope.rcpts[0] if entry.envelope.rcpts else "",
            auth=auth,
            reason="unauthenticated-policy",
            why=reason,
            fix="smtpconn queue retry " + entry.id + " delivers it",
        )

    def _failed(self, entry: SpoolEntry, state: RetryState, error: str, permanent: bool) -> None:
        state.attempts += 1
        state.last_error = error
        expired = time.time() - entry.envelope.received_at > self.config.retry_window
        if permanent or expired:
            state.held = True
            self.spool.save_state(entry, state)
            log_event(
                "inbound.held",
                logging.ERROR,
                id=entry.id,
                sink=self.sink.kind,
                error=error,
                reason="permanent" if permanent else "retry-window",
                fix="fix the sink, then: smtpconn queue retry " + entry.id,
            )
            return
        delay = backoff_delay(state.attempts, self.config.retry_initial, RETRY_CAP)
        state.next_attempt = time.time() + delay
        self.spool.save_state(entry, state)
        log_event(
            "inbound.deferred",
            logging.WARNING,
            id=entry.id,
            sink=self.sink.kind,
            error=error,
            attempts=state.attempts,
            retry_in=delay,
        )
