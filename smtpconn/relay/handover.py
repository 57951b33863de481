"""Inbound delivery: hand each spooled inbound message to the sink.

``Authentication-Results`` is computed here (bounded by the timeout), not before the ``250``, so
acknowledging never waits for DNS. A temporary sink failure is retried with back-off for ever
(past the retry window the message is *held* and logged as an error: the help desk's side is
ours to fix, and nobody else would get a bounce); a permanent one holds the message at once, and
so does an unexpected error raised while handing this message over (its data is at fault: it
would fail the same way every time).
Held messages are listed by ``smtpconn queue list`` and released with ``smtpconn queue retry``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import dns.resolver

from smtpconn.dns import CachingResolver
from smtpconn.dns.resolvers import make_resolver
from smtpconn.relay.authres import AuthInput, authentication_results
from smtpconn.relay.config import RETRY_CAP, RelayConfig
from smtpconn.relay.log import log_event
from smtpconn.relay.sinks.base import Sink, SinkError, SinkItem
from smtpconn.relay.spool import RetryState, Spool, SpoolEntry, backoff_delay
from smtpconn.relay.tagging import prepend
from smtpconn.relay.worker import Attempted

DNS_CACHE_SIZE = 4096  # (name, type) answers; bounded so a flood of sender domains cannot grow it


class SinkHandover:
    def __init__(self, config: RelayConfig, spool: Spool, sink: Sink) -> None:
        self.config = config
        self.spool = spool
        self.sink = sink
        self.auth_timeout = min(config.settings.timeout, 10.0)
        self._started = time.time()
        self._resolver = make_resolver(config.settings.resolvers, timeout=self.auth_timeout)
        # Unlike verify (which must see DNS as it is now), the relay sees the same few sender
        # domains all day: keep answers for their TTL (negative ones too, RFC 2308) as any MTA's
        # resolver does. Without it the SPF/DKIM/DMARC lookups of every message were the
        # largest CPU cost of inbound delivery (benchmarks/README.md).
        self._resolver.cache = dns.resolver.LRUCache(DNS_CACHE_SIZE)

    async def __call__(self, entry: SpoolEntry) -> Attempted:
        envelope = entry.envelope
        # aiosmtpd reports the null reverse-path as "<>"; the spool's word for it is "".
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        message, state = await asyncio.to_thread(self.spool.message_and_state, entry)
        meta = dict(envelope.meta)
        if meta.get("client_ip") and meta.get("origin") != "relay-dsn":
            header = await authentication_results(
                AuthInput(
                    client_ip=str(meta["client_ip"]),
                    helo=str(meta.get("helo", "")),
                    mail_from=mail_from,
                    message=message,
                ),
                self.config.hostname,
                self.auth_timeout,
                CachingResolver(self._resolver),
            )
            message = prepend(message, header)
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
        try:
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
        await asyncio.to_thread(self.spool.remove, entry)
        log_event(
            "inbound.delivered",
            id=entry.id,
            sink=self.sink.kind,
            rcpt=item.rcpt,
            tag=meta.get("tag"),
            attempts=state.attempts + 1,
            delay=time.time() - envelope.received_at,
        )
        return Attempted(None)

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
