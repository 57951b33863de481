"""Inbound: the lab Postfix relays to the relay over TLS + AUTH; forwarding; never an open relay."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from lab.lab import Lab
from lab.swaks import send
from smtpconn.relay.runtime import Relay

from .conftest import INBOUND_PASS, INBOUND_USER, RelayEnv


def token() -> str:
    return f"relaytest-{uuid.uuid4().hex}"


def send_direct(port: int, to: str, subject: str, **kwargs: Any) -> Any:
    """swaks straight to the relay's inbound port (STARTTLS unless tls=None)."""
    kwargs.setdefault("tls", "starttls")
    return send(port, to=to, sender="someone@good.test", subject=subject, **kwargs)


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


async def test_wrong_password_is_refused(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    res = await asyncio.to_thread(
        send_direct,
        running_relay.inbound_port,
        f"support@{relay_env.domain}",
        token(),
        auth=(INBOUND_USER, "not-the-password"),
    )
    assert not res.ok
    assert "535" in res.transcript
    assert INBOUND_PASS not in relay_env.log_text()
    assert relay_env.sink_messages() == []


async def test_unauthenticated_refused_for_bidirectional_but_forwarding_accepted(
    relay_env: RelayEnv, running_relay: Relay
) -> None:
    refused = await asyncio.to_thread(
        send_direct, running_relay.inbound_port, f"support@{relay_env.domain}", token()
    )
    assert not refused.ok
    assert "530 5.7.0" in refused.transcript

    t = token()
    accepted = await asyncio.to_thread(
        send_direct, running_relay.inbound_port, f"forward@{relay_env.domain}", t, tls=None
    )
    assert accepted.ok, accepted.transcript
    raw = await asyncio.to_thread(relay_env.wait_for_sink, t)
    assert b"X-Smtpconn-Tag: unauthenticated; mode=outbound-only" in raw
    assert b"with ESMTP id" in raw


async def test_forged_tag_is_removed(relay_env: RelayEnv, running_relay: Relay) -> None:
    t = token()
    res = await asyncio.to_thread(
        send_direct,
        running_relay.inbound_port,
        f"forward@{relay_env.domain}",
        t,
        extra=["--add-header", "X-Smtpconn-Tag: authenticated; mode=bidirectional"],
    )
    assert res.ok, res.transcript
    raw = await asyncio.to_thread(relay_env.wait_for_sink, t)
    assert raw.count(b"X-Smtpconn-Tag:") == 1
    assert b"X-Smtpconn-Tag: unauthenticated; mode=outbound-only" in raw


async def test_never_an_open_relay(relay_env: RelayEnv, running_relay: Relay) -> None:
    for auth in (None, (INBOUND_USER, INBOUND_PASS)):
        res = await asyncio.to_thread(
            send_direct, running_relay.inbound_port, "victim@example.org", token(), auth=auth
        )
        assert not res.ok
        assert "550 5.7.1" in res.transcript
    assert relay_env.sink_messages() == []
