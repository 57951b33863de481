"""The inbound listener's policy: who may deliver to which support address.

* A recipient the profile does not list is refused with ``550 5.7.1`` — never an open relay,
  whether or not the client logged in.
* A bidirectional address (authenticated workflow) only takes mail from a session that logged in
  over TLS with inbound credentials of this profile (the customer's server): otherwise ``530``.
* An outbound-only address (and any address under the forwarding workflow) takes ordinary
  auto-forwarded mail without AUTH; it is tagged ``unauthenticated``.

* A login is valid only for the addresses it was issued for: the entries holding that same user
  name and hash (``add-address --inbound-username`` of an existing login extends it explicitly).
  A logged-in session that names an authenticated-workflow address outside its login's scope
  gets ``550 5.7.1``. An address on the forwarding path (outbound-only, or still under the
  forwarding workflow) takes the message as anyone's forwarded mail, tagged
  ``unauthenticated``: a customer's Postfix logs in on every connection to its relay host, and
  refusing its ordinary forwarding would bounce mail, but the login was not issued for that
  address, so it never earns the ``authenticated`` tag there.

* Unauthenticated mail to an address whose ``unauthenticated_policy`` is ``reject`` is judged
  before the ``250`` (:mod:`smtpconn.relay.policy`): DMARC failing (by our evaluation or a
  trusted ARC sealer's) answers ``550 5.7.1`` at the end of DATA, so the sending server bounces
  and we never do. One DATA has one reply, so such a recipient does not share a transaction with
  recipients judged differently: the later ones get ``452 4.5.3`` and the client sends them in
  another transaction (RFC 5321 §3.3). Every other message is judged when it is handed to the
  sink (acknowledging it never waits for DNS).

Each support address becomes its own spool entry, so every copy carries the tag of its own
address's mode, and ``250`` is only sent once all of them are on disk (written together: one
``fdatasync`` per copy into a pre-created spool slot, no folder fsync; see relay/spool.py). A
recipient repeated in one transaction (in any spelling of the same address) gets ``250`` but no
second copy, and the copies are built one at a time as the spool writes them, never all in
memory at once.

The spool write happens on the event loop itself while the session is the only one its process
serves (nothing else would wait for the loop meanwhile), in a worker thread otherwise: on a
lone connection that brings each ``250`` ~0.5 ms sooner, ~20 % of a message's round trips
(benchmarks/README.md, item 21). A write that took longer than ``SLOW_WRITE`` (a busy or
failing disk) sends every write to worker threads for ``SLOW_WRITE_BACKOFF``, so a stalling disk
never holds the loop twice in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from smtpconn.dns import CachingResolver
from smtpconn.message.escaping import escape_controls
from smtpconn.profile.model import UnauthenticatedPolicy
from smtpconn.relay.authres import AuthInput, RecentResults, assess, relay_resolver
from smtpconn.relay.config import InboundRoute, RelayConfig
from smtpconn.relay.log import log_event
from smtpconn.relay.policy import Action, Judgement, judge
from smtpconn.relay.server import RelaySMTP
from smtpconn.relay.spool import Envelope, OnStored, Spool, SpoolEntry, new_id
from smtpconn.relay.tagging import TraceInfo, prepend, received_header, strip_untrusted

MAX_RECIPIENTS = 100
SLOW_WRITE = 0.02  # seconds; a healthy local disk syncs 10 KB in well under a millisecond
SLOW_WRITE_BACKOFF = 10.0


class _WriteInline:
    """Whether the next spool write may block the event loop (see the module's docstring)."""

    def __init__(self) -> None:
        self._threads_until = 0.0

    def allowed(self, server: RelaySMTP) -> bool:
        return server.tracker.limits.sessions <= 1 and time.monotonic() >= self._threads_until

    def took(self, seconds: float) -> None:
        if seconds > SLOW_WRITE:
            self._threads_until = time.monotonic() + SLOW_WRITE_BACKOFF


class InboundHandler:
    def __init__(self, config: RelayConfig, spool: Spool, on_stored: OnStored) -> None:
        self.config = config
        self.spool = spool
        self.on_stored = on_stored  # hands what was spooled to the sink worker
        self._inline = _WriteInline()
        self.auth_timeout = min(config.settings.timeout, 10.0)
        self._resolver = relay_resolver(config.settings.resolvers, self.auth_timeout)
        self._recent = RecentResults()  # a busy sender's messages share SPF and DMARC lookups

    async def handle_RCPT(
        self, server: RelaySMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        route = self.config.route_for(address)
        if route is None:
            log_event("inbound.refused", client=server.client_ip, rcpt=address, reason="not-served")
            return f"550 5.7.1 <{address}>: relay access denied (not a support address here)"
        if route.needs_auth and not session.authenticated:
            log_event(
                "inbound.refused", client=server.client_ip, rcpt=address, reason="auth-required"
            )
            return f"530 5.7.0 <{address}>: authentication required (log in over TLS)"
        if route.needs_auth and not server.may_deliver_to(route):
            log_event(
                "inbound.refused",
                client=server.client_ip,
                rcpt=address,
                user=server.login_user,
                reason="outside-credential-scope",
            )
            return f"550 5.7.1 <{address}>: not authorised for this login"
        if any(self.config.route_for(rcpt) == route for rcpt in envelope.rcpt_tos):
            return "250 2.1.5 OK (already a recipient)"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if envelope.rcpt_tos and self._judged_at_data(server, route) != self._judged_at_data(
            server, self.config.route_for(envelope.rcpt_tos[0])
        ):
            return "452 4.5.3 Send this recipient in another transaction (different policy)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        return "250 2.1.5 OK"

    def _judged_at_data(
        self, server: RelaySMTP, route: InboundRoute | None
    ) -> tuple[str, ...] | None:
        """The ARC sealers a reject policy judges this recipient's copy with before the 250;
        None when it is not judged then (authenticated, or another policy)."""
        if (
            route is None
            or route.address.unauthenticated_policy is not UnauthenticatedPolicy.REJECT
        ):
            return None
        if route.needs_auth and server.may_deliver_to(route):
            return None  # authenticated relay mail is never judged by the policy
        return route.address.trusted_arc_sealers

    async def handle_DATA(self, server: RelaySMTP, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        clean = strip_untrusted(raw, self.config.hostname)
        arrival = _Arrival.of(server, session, envelope)
        judged: tuple[Judgement, str] | None = None
        sealers = self._judged_at_data(server, self.config.route_for(arrival.rcpts[0]))
        if sealers is not None:
            judged = await self._judge(arrival, clean, sealers)
            refusal = _refusal(judged[0])
            if refusal is not None:
                log_event(
                    "inbound.rejected",
                    client=server.client_ip,
                    mail_from=arrival.mail_from,
                    rcpt=",".join(arrival.rcpts),
                    auth=judged[0].auth.value,
                    reason="unauthenticated-policy",
                    why=judged[0].reason,
                )
                return refusal
        arrival = replace(arrival, judged=judged)
        try:
            stored = await self._store(server, arrival, clean)
        except OSError as exc:
            log_event(
                "inbound.store-failed", logging.ERROR, client=server.client_ip, error=exc.strerror
            )
            # Copies already renamed into the queue stay and are delivered: the client retries
            # and the help desk may see a duplicate, which is better than losing one.
            return "451 4.3.0 Could not store the message; try again later"
        tls_version, _cipher = server.tls_details()
        for entry in stored:
            log_event(
                "inbound.accepted",
                id=entry.id,
                client=server.client_ip,
                auth=server.login_user,
                tag=entry.envelope.meta.get("tag"),
                mail_from=envelope.mail_from,
                rcpt=entry.envelope.rcpts[0],
                size=len(raw),
                tls=tls_version,
            )
        self.on_stored("inbound", stored)
        return f"250 2.0.0 OK queued as {','.join(e.id for e in stored)}"

    async def _store(self, server: RelaySMTP, arrival: _Arrival, clean: bytes) -> list[SpoolEntry]:
        """One sync per copy (Spool.put_many, which builds each copy as it writes it), on the
        loop or in one worker-thread trip. keep: the hand-over takes the copies from memory
        instead of reading them back."""
        copies = self._copies(arrival, clean)
        if not self._inline.allowed(server):
            return await asyncio.to_thread(self.spool.put_many, copies, keep=True)
        started = time.monotonic()
        try:
            return self.spool.put_many(copies, keep=True)
        finally:
            self._inline.took(time.monotonic() - started)

    async def _judge(
        self, arrival: _Arrival, clean: bytes, sealers: tuple[str, ...]
    ) -> tuple[Judgement, str]:
        """The policy's judgement and the Authentication-Results header it was made on (kept
        for the hand-over, which then need not ask DNS again)."""
        verdicts = await assess(
            AuthInput(arrival.client_ip, arrival.helo, arrival.mail_from, clean),
            self.auth_timeout,
            CachingResolver(self._resolver),
            self._recent,
        )
        return judge(verdicts, sealers), verdicts.header(self.config.hostname, arrival.client_ip)

    def _copies(
        self, arrival: _Arrival, clean: bytes
    ) -> Iterator[tuple[Envelope, bytes, str | None]]:
        """One tagged copy per recipient, each built only when the spool asks for it (perhaps in
        a worker thread, hence from a snapshot of the session taken on the loop)."""
        now = time.time()
        for rcpt in arrival.rcpts:
            route = self.config.route_for(rcpt)
            if route is None:  # the profile cannot change under us, but never guess
                continue
            mode = route.address.mode.value
            # Authenticated only where the session's login was issued for this very address.
            authenticated = arrival.scope is not None and route.key in arrival.scope
            meta = {
                "tag": "authenticated" if authenticated else "unauthenticated",
                "mode": mode,
                "support_address": route.address.address.ascii,
                "client_ip": arrival.client_ip,
                "helo": arrival.helo,
                "tls": arrival.tls_version or "",
                "auth_user": arrival.auth_user or "",
                # The hand-over writes the tag (with auth= for unauthenticated mail).
                "tag_at_handover": True,
            }
            if arrival.smtputf8:
                meta["smtputf8"] = True
            if arrival.judged is not None and not authenticated:
                meta["auth"] = arrival.judged[0].auth.value
                meta["authres"] = arrival.judged[1]
            entry_id = new_id()
            trace = received_header(
                TraceInfo(
                    helo=arrival.helo,
                    client_ip=arrival.client_ip,
                    hostname=self.config.hostname,
                    queue_id=entry_id,
                    recipient=rcpt,
                    tls_version=arrival.tls_version,
                    tls_cipher=arrival.tls_cipher,
                    authenticated=arrival.authenticated,
                ),
                when=now,
            )
            message = prepend(clean, trace)
            yield Envelope("inbound", arrival.mail_from, (rcpt,), now, meta), message, entry_id


@dataclass(frozen=True, slots=True)
class _Arrival:
    """What the copies of one message need to know about its session."""

    rcpts: tuple[str, ...]
    mail_from: str
    authenticated: bool  # the session logged in (the trace header's ESMTPA)
    scope: frozenset[str] | None  # route keys the login may deliver to as authenticated
    client_ip: str
    helo: str
    auth_user: str | None
    tls_version: str | None
    tls_cipher: str | None
    judged: tuple[Judgement, str] | None = None  # a reject policy's, before the 250
    smtputf8: bool = False  # MAIL FROM carried SMTPUTF8 (RFC 6531)

    @classmethod
    def of(cls, server: RelaySMTP, session: Any, envelope: Any) -> _Arrival:
        tls_version, tls_cipher = server.tls_details()
        return cls(
            rcpts=tuple(envelope.rcpt_tos),
            # aiosmtpd reports the null reverse-path as "<>"; the spool's word for it is "".
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            authenticated=bool(session.authenticated),
            scope=_scope(server) if session.authenticated else None,
            client_ip=server.client_ip,
            helo=session.host_name or "",
            auth_user=server.login_user,
            tls_version=tls_version,
            tls_cipher=tls_cipher,
            smtputf8=bool(getattr(envelope, "smtp_utf8", False)),
        )


def _refusal(judgement: Judgement) -> str | None:
    """The reply refusing the message under a reject policy, or None to accept it."""
    action = judgement.action(UnauthenticatedPolicy.REJECT)
    # The reason names the author's domain: never a control character or non-ASCII in a reply.
    reason = escape_controls(judgement.reason).encode("ascii", "backslashreplace").decode()
    if action is Action.REJECT:
        return f"550 5.7.1 Unauthenticated mail refused: {reason}"
    if action is Action.DEFER:
        return f"451 4.7.1 Could not check the sender's authentication ({reason}); try later"
    return None


def _scope(server: RelaySMTP) -> frozenset[str] | None:
    credential = server.credential
    if credential is None or credential.scope is None:
        return None  # a login not bound to addresses vouches for none of them
    return credential.scope
