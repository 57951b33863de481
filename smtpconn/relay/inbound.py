"""The inbound listener's policy: who may deliver to which support address.

* A recipient the profile does not list is refused with ``550 5.7.1`` — never an open relay,
  whether or not the client logged in.
* A bidirectional address (authenticated workflow) only takes mail from a session that logged in
  over TLS with inbound credentials of this profile (the customer's server): otherwise ``530``.
* An outbound-only address (and any address under the forwarding workflow) takes ordinary
  auto-forwarded mail without AUTH; it is tagged ``unauthenticated``.

* A session that logged in may only deliver to the addresses its login was issued for: the
  entries holding that same user name and hash (``add-address --inbound-username`` of an existing
  login extends it explicitly). Any other recipient, bidirectional or outbound-only, gets
  ``550 5.7.1``: one customer's login never carries mail, let alone the ``authenticated`` tag, to
  another customer's address.

Each recipient becomes its own spool entry, so every copy carries the tag of its own address's
mode, and ``250`` is only sent once all of them are on disk (written together: one directory
fsync per message, not per recipient).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from smtpconn.relay.config import RelayConfig
from smtpconn.relay.log import log_event
from smtpconn.relay.server import RelaySMTP
from smtpconn.relay.spool import Envelope, OnStored, Spool, new_id
from smtpconn.relay.tagging import (
    TAG_HEADER,
    TraceInfo,
    prepend,
    received_header,
    strip_untrusted,
    tag_value,
)

MAX_RECIPIENTS = 100


class InboundHandler:
    def __init__(self, config: RelayConfig, spool: Spool, on_stored: OnStored) -> None:
        self.config = config
        self.spool = spool
        self.on_stored = on_stored  # hands what was spooled to the sink worker

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
        if session.authenticated and not server.may_deliver_to(route):
            log_event(
                "inbound.refused",
                client=server.client_ip,
                rcpt=address,
                user=server.login_user,
                reason="outside-credential-scope",
            )
            return f"550 5.7.1 <{address}>: not authorised for this login"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: RelaySMTP, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        clean = strip_untrusted(raw, self.config.hostname)
        authenticated = bool(session.authenticated)
        tls_version, tls_cipher = server.tls_details()
        now = time.time()
        copies: list[tuple[Envelope, bytes, str | None]] = []
        for rcpt in envelope.rcpt_tos:
            route = self.config.route_for(rcpt)
            if route is None:  # the profile cannot change under us, but never guess
                continue
            mode = route.address.mode.value
            tag = tag_value(authenticated, mode)
            meta = {
                "tag": "authenticated" if authenticated else "unauthenticated",
                "mode": mode,
                "support_address": route.address.address.ascii,
                "client_ip": server.client_ip,
                "helo": session.host_name or "",
                "tls": tls_version or "",
                "auth_user": server.login_user or "",
            }
            entry_id = new_id()
            trace = received_header(
                TraceInfo(
                    helo=session.host_name or "",
                    client_ip=server.client_ip,
                    hostname=self.config.hostname,
                    queue_id=entry_id,
                    recipient=rcpt,
                    tls_version=tls_version,
                    tls_cipher=tls_cipher,
                    authenticated=authenticated,
                ),
                when=now,
            )
            message = prepend(clean, f"{TAG_HEADER}: {tag}", trace)
            copies.append(
                (
                    Envelope("inbound", envelope.mail_from or "", (rcpt,), now, meta),
                    message,
                    entry_id,
                )
            )
        try:
            # One directory fsync for all the copies of this message (Spool.put_many).
            stored = await asyncio.to_thread(self.spool.put_many, copies)
        except OSError as exc:
            log_event("inbound.store-failed", client=server.client_ip, error=exc.strerror)
            # Copies already renamed into the queue stay and are delivered: the client retries
            # and the help desk may see a duplicate, which is better than losing one.
            return "451 4.3.0 Could not store the message; try again later"
        for entry in stored:
            log_event(
                "inbound.accepted",
                id=entry.id,
                client=server.client_ip,
                auth=server.login_user,
                tag="authenticated" if authenticated else "unauthenticated",
                mail_from=envelope.mail_from,
                rcpt=entry.envelope.rcpts[0],
                size=len(raw),
                tls=tls_version,
            )
        self.on_stored("inbound", stored)
        return f"250 2.0.0 OK queued as {','.join(e.id for e in stored)}"
