"""Outbound connection reuse: several replies to the customer's server (the lab Postfix) over
one TLS + AUTH session (no RSET between delivered messages sent back to back: see
test_relay_pipelining.py); a dropped connection is replaced without a retry."""

from __future__ import annotations

import asyncio
import time
import uuid

from lab.lab import Lab
from smtpconn.dns.resolvers import resolve_host
from smtpconn.profile.model import OutboundServer
from smtpconn.profile.store import load_profile
from smtpconn.profile.wire import server_spec
from smtpconn.relay.runtime import Relay
from smtpconn.relay.sessions import SessionPool
from smtpconn.smtp.delivery import DeliveryResult, DeliverySession
from smtpconn.smtp.failures import StageName
from smtpconn.smtp.session import secure_client_context

from .conftest import RelayEnv
from .test_relay_outbound import reply, submit


def _server(relay_env: RelayEnv) -> OutboundServer:
    profile = load_profile(relay_env.profile).profile
    outbound = next(a.outbound for a in profile.addresses if a.address.ascii == "support@good.test")
    assert outbound is not None
    return outbound


async def _session(lab: Lab, relay_env: RelayEnv) -> DeliverySession:
    settings = relay_env.settings
    server = _server(relay_env)
    return DeliverySession(
        server_spec(server),
        lab.user.password,
        tls_context=secure_client_context(settings.ca_file),
        ehlo_name="relay.helpdesk.test",
        timeout=settings.timeout,
        address=await resolve_host(server.host, settings.resolvers, timeout=settings.timeout),
    )


def _stages(result: DeliveryResult) -> list[str]:
    return [s.stage for s in result.stages]


async def test_one_session_carries_several_messages(lab: Lab, relay_env: RelayEnv) -> None:
    session = await _session(lab, relay_env)
    tokens = [f"reuse-{uuid.uuid4().hex}" for _ in range(3)]
    results = []
    for t in tokens:
        message = reply("support@good.test", "bob@good.test", t).as_bytes()
        results.append(await session.send("support@good.test", ["bob@good.test"], message))
    try:
        assert all(r.delivered for r in results), [r.failure for r in results]
        first, *rest = (_stages(r) for r in results)
        assert StageName.AUTH in first and StageName.STARTTLS in first
        for stages in rest:  # no new TLS or AUTH (and no RSET after a delivered message)
            assert stages[0] == StageName.MAIL
            assert StageName.AUTH not in stages and StageName.TLS not in stages
        assert session.messages == 3 and session.connected
        secret_free = "\n".join(line for r in results for line in r.transcript)
        assert lab.user.password not in secret_free
    finally:
        await session.close()
    assert not session.connected
    for t in tokens:
        found = await asyncio.to_thread(lab.find_message, t, "bob@good.test")
        assert b"with ESMTPSA" in found.raw


async def test_a_dropped_connection_is_replaced_for_the_next_message(
    lab: Lab, relay_env: RelayEnv
) -> None:
    session = await _session(lab, relay_env)
    first = reply("support@good.test", "bob@good.test", f"drop-{uuid.uuid4().hex}").as_bytes()
    assert (await session.send("support@good.test", ["bob@good.test"], first)).delivered
    # The server (or a NAT box) dropped the idle connection under us.
    inner = session._session
    assert inner is not None and inner._writer is not None
    inner._writer.transport.abort()
    await asyncio.sleep(0)
    t = f"drop-{uuid.uuid4().hex}"
    message = reply("support@good.test", "bob@good.test", t).as_bytes()
    result = await session.send("support@good.test", ["bob@good.test"], message)
    await session.close()
    assert result.delivered and StageName.AUTH in _stages(result)  # a fresh, authenticated one
    await asyncio.to_thread(lab.find_message, t, "bob@good.test")


async def test_the_relay_reuses_sessions_and_closes_idle_ones(
    lab: Lab, relay_env: RelayEnv
) -> None:
    relay = Relay.from_profile_file(relay_env.profile, settings=relay_env.settings, poll=0.2)
    await relay.start()
    try:
        pool = relay._sessions
        assert isinstance(pool, SessionPool)
        pool.idle_seconds = 0.5
        tokens = [f"pool-{uuid.uuid4().hex}" for _ in range(8)]
        for t in tokens:
            await submit(relay.submission_port, "support@good.test", "bob@good.test", t)
        for t in tokens:
            await asyncio.to_thread(lab.find_message, t, "bob@good.test")
        assert await relay.wait_idle(10)
        assert 1 <= pool.opened < len(tokens)  # at most one per parallel delivery
        deadline = time.monotonic() + 5
        while pool.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert pool.idle == 0  # idle sessions were closed (QUIT) after idle_seconds
    finally:
        await relay.stop(grace=2.0)
