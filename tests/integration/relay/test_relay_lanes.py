"""Outbound lanes against the lab's Postfix: a server's connection limit observed at the server,
a throttling server (``432 4.3.2`` from a policy service) slowing only its own lane, and a reply
to more recipients than a transaction allows split so every recipient gets one copy."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import aiosmtplib

from lab.lab import Lab
from lab.postfix import LIMITED_CONNECTIONS, THROTTLE_AFTER
from smtpconn.relay.log import OBSERVERS
from smtpconn.relay.queue import list_queue
from smtpconn.relay.runtime import Relay
from smtpconn.relay.spool import Spool

from .conftest import RelayEnv, outbound_to, started_relay, write_profile
from .test_relay_outbound import reply, submit


def _profile(lab: Lab, env: RelayEnv, addresses: list[dict[str, Any]]) -> None:
    assert lab.ca is not None
    write_profile(
        env.profile,
        addresses,
        {
            "inbound_listen": "127.0.0.1:0",
            "submission_listen": "127.0.0.1:0",
            "tls_cert": str(lab.ca.relay.cert),
            "tls_key": str(lab.ca.relay.key),
            "spool": "spool",
            "hostname": "relay.helpdesk.test",
            "retry_initial": 1,
            "sink": {"kind": "maildir", "path": "helpdesk"},
        },
    )


def _address(lab: Lab, address: str, port_name: str, **limits: int) -> dict[str, Any]:
    outbound = outbound_to(lab, lab.ports[port_name])
    if limits:
        outbound["limits"] = limits
    return {"address": address, "mode": "outbound-only", "outbound": outbound}


def _max_sessions(log: str, service: str) -> int:
    """Sessions open at once on one Postfix service, from its own connect/disconnect lines."""
    open_now = peak = 0
    for match in re.finditer(rf"postfix/{service}/smtpd\[\d+\]: (connect|disconnect) from", log):
        open_now += 1 if match.group(1) == "connect" else -1
        peak = max(peak, open_now)
    return peak


async def test_a_servers_connection_limit_holds_at_the_server(
    lab: Lab, relay_env: RelayEnv
) -> None:
    assert lab.postfix is not None
    _profile(
        lab,
        relay_env,
        [_address(lab, "help@good.test", "limited", max_connections=LIMITED_CONNECTIONS)],
    )
    since = lab.postfix.log_position()
    tokens = [f"limited-{uuid.uuid4().hex}" for _ in range(12)]
    async with started_relay(relay_env) as relay:
        await asyncio.gather(
            *(submit(relay.submission_port, "help@good.test", "bob@good.test", t) for t in tokens)
        )
        for token in tokens:
            await asyncio.to_thread(lab.find_message, token, "bob@good.test", 60)
        assert await relay.wait_idle(10)
    log = lab.postfix.log_text(since)
    # The server's own account: anvil never had to refuse a session, and the relay did use
    # the connections it was allowed (the test would pass trivially at one).
    assert "Connection concurrency limit exceeded" not in log
    assert _max_sessions(log, "limited") == LIMITED_CONNECTIONS
    assert "event=outbound.bounced" not in relay_env.log_text()


async def test_a_throttling_server_slows_only_its_lane(lab: Lab, relay_env: RelayEnv) -> None:
    assert lab.postfix is not None
    lab.postfix.reset_throttle()
    _profile(
        lab,
        relay_env,
        [
            _address(lab, "throttled@good.test", "throttling"),
            _address(lab, "steady@good.test", "submission"),
        ],
    )
    throttled_lane = f"{lab.server_name}:{lab.ports['throttling']}"
    events: list[tuple[str, dict[str, Any], bool]] = []
    relay_ref: list[Relay] = []

    def observe(event: str, fields: dict[str, Any]) -> None:
        # Whether the throttled server's lane was backing off at the moment of each event.
        lanes = relay_ref[0].lanes if relay_ref else None
        backing_off = lanes is not None and any(
            lane.key == throttled_lane for lane in lanes.throttled()
        )
        events.append((event, dict(fields), backing_off))

    slow = [f"slow-{uuid.uuid4().hex}" for _ in range(THROTTLE_AFTER + 4)]
    steady = [f"steady-{uuid.uuid4().hex}" for _ in range(4)]
    OBSERVERS.append(observe)
    try:
        async with started_relay(relay_env) as relay:
            relay_ref.append(relay)
            for token in slow:
                await submit(relay.submission_port, "throttled@good.test", "bob@good.test", token)
            await _wait_for(lambda: any(e[0] == "outbound.throttled" for e in events), 30)
            # While that lane backs off, `queue list` says so for its waiting messages.
            items = list_queue(Spool(relay_env.spool), "outbound")
            assert any(i.status == "throttled" and i.throttled_until for i in items)
            for token in steady:
                await submit(relay.submission_port, "steady@good.test", "alice@good.test", token)
            for token in steady:
                await asyncio.to_thread(lab.find_message, token, "alice@good.test", 30)
            for token in slow:
                await asyncio.to_thread(lab.find_message, token, "bob@good.test", 90)
            assert await relay.wait_idle(10)
    finally:
        OBSERVERS.remove(observe)
    throttles = [f for e, f, _ in events if e == "outbound.throttled"]
    assert throttles and all(f["server"] == throttled_lane for f in throttles)
    assert all("432 4.3.2" in str(f["reply"]) for f in throttles)
    # The log line carries the reply-code catalogue's cause and fix, not just the bare reply.
    assert all("Microsoft 365: more than 3 concurrent" in str(f["reply"]) for f in throttles)
    # The other server's lane kept delivering while the throttled one waited.
    steady_deliveries = [
        off for e, f, off in events if e == "outbound.delivered" and f["rcpt"] == "alice@good.test"
    ]
    assert len(steady_deliveries) == len(steady) and any(steady_deliveries)
    assert not [e for e, _f, _ in events if e == "outbound.bounced"]
    assert not [raw for raw in relay_env.sink_messages() if b"multipart/report" in raw]
    # Every slow reply reached the mailbox exactly once.
    for token in slow:
        copies = [m for m in lab.postfix.messages("bob@good.test") if token.encode() in m.raw]
        assert len(copies) == 1, token


async def test_a_reply_to_250_recipients_is_split_by_100(lab: Lab, relay_env: RelayEnv) -> None:
    assert lab.postfix is not None
    _profile(
        lab, relay_env, [_address(lab, "many@good.test", "submission", recipients_per_message=100)]
    )
    token = f"split-{uuid.uuid4().hex}"
    recipients = [f"r{i}-{token[-8:]}@good.test" for i in range(250)]
    since = lab.postfix.log_position()
    async with started_relay(relay_env) as relay:
        message = reply("many@good.test", "undisclosed-recipients:;", token)
        await aiosmtplib.send(
            message,
            sender="many@good.test",
            recipients=recipients,
            hostname="127.0.0.1",
            port=relay.submission_port,
            start_tls=False,
            use_tls=False,
            timeout=30,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = [m for m in lab.postfix.messages() if token.encode() in m.raw]
            if len(got) >= len(recipients):
                break
            await asyncio.sleep(0.2)
        assert await relay.wait_idle(10)
    copies = [m.delivered_to for m in lab.postfix.messages() if token.encode() in m.raw]
    assert sorted(copies) == sorted(r.lower() for r in recipients)  # one copy each
    # The server saw three transactions: 100 + 100 + 50 recipients.
    log = lab.postfix.log_text(since)
    counts = re.findall(r"from=<many@good\.test>, size=\d+, nrcpt=(\d+)", log)
    assert sorted(int(c) for c in counts) == [50, 100, 100]


async def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
