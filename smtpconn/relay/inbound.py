"""The inbound listener's policy: who may deliver to which support address.

* A recipient the profile does not list is refused with ``550 5.7.1`` — never an open relay,
  whether or not the client logged in.
* A bidirectional address (authenticated workflow) only takes mail from a session that logged in
  over TLS with inbound credentials of this profile (the customer's server): otherwise ``530``.
* An outbound-only address (and any address under the forwarding workflow) takes ordinary
  auto-forwarded mail without AUTH; it is tagged ``unauthenticated``.

Credentials are per profile, not per address: any inbound credential of the profile may deliver
to any of its addresses (one relay serves one organisation; a customer MTA such as Postfix uses
one login per next hop).

Each recipient becomes its own spool entry, so every copy carries the tag of its own address's
mode, and ``250`` is only sent once all of them are on disk.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from smtpconn.relay.config import RelayConfig
from smtpconn.relay.log import log_event
from smtpconn.relay.server import RelaySMTP
from smtpconn.relay.spool import Envelope, Spool, new_id
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
    def __init__(self, config: RelayConfig, spool: Spool, on_stored: Any) -> None:
        self.config = config
        self.spool = spool
        self.on_stored = on_stored  # called after a message is spooled: wakes the sink worker

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
        ids: list[str] = []
        try:
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
                await asyncio.to_thread(
                    self.spool.put,
                    Envelope("inbound", envelope.mail_from or "", (rcpt,), now, meta),
                    message,
                    entry_id,
                )
                ids.append(entry_id)
        except OSError as exc:
            log_event("inbound.store-failed", client=server.client_ip, error=exc.strerror)
            # Entries already written stay and are delivered: the client retries the rest and
            # the help desk may see a duplicate, which is better than losing one.
            return "451 4.3.0 Could not store the message; try again later"
        for entry_id, rcpt in zip(ids, envelope.rcpt_tos, strict=False):
            log_event(
                "inbound.accepted",
                id=entry_id,
                client=server.client_ip,
                auth=server.login_user,
                tag="authenticated" if authenticated else "unauthenticated",
                mail_from=envelope.mail_from,
                rcpt=rcpt,
                size=len(raw),
                tls=tls_version,
            )
        self.on_stored("inbound")
        return f"250 2.0.0 OK queued as {','.join(ids)}"
