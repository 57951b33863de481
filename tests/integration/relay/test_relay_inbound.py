"""Inbound: the lab Postfix relays to the relay over TLS + AUTH; forwarding; never an open relay."""

from __future__ import annotations

import asyncio
import uuid

from lab.lab import Lab
from smtpconn.relay.runtime import Relay

from .conftest import INBOUND_PASS, INBOUND_USER, RelayEnv


def token() -> str:
    return f"relaytest-{uuid.uuid4().hex}"


async def test_postfix_relays_inbound_over_tls_and_auth(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    lab.set_relay_target(
        relay_env.domain, "127.0.0.1", running_relay.inbound_port, INBOUND_USER, INBOUND_PASS
    )
    t = token()
    res = await asyncio.to_thread(
        lab.send, "mx", to=f"support@{relay_env.domain}", sender="customer@good.test", subject=t
    )
    assert res.ok, res.transcript
    raw = await asyncio.to_thread(relay_env.wait_for_sink, t)
    assert b"X-Smtpconn-Tag: authenticated; mode=bidirectional" in raw
    assert b"Authentication-Results: relay.helpdesk.test;" in raw
    assert b"with ESMTPSA" in raw
    assert f"Delivered-To: support@{relay_env.domain}".encode() in raw
