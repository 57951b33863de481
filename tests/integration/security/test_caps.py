"""Global caps shared by all listeners: simultaneous sessions (``max_sessions``) and DATA bytes
held in memory at once (``max_memory``); beyond either the client gets ``421 4.3.2``."""

from __future__ import annotations

import asyncio
import uuid

from lab.lab import Lab
from tests.integration.relay.conftest import RelayEnv, started_relay

from .listeners import Path, envelope_for, rest_of_session, set_relay_keys, start_transaction
from .rawsmtp import RawSmtp


async def test_max_sessions_counts_all_listeners(lab: Lab, relay_env: RelayEnv) -> None:
    set_relay_keys(relay_env, max_sessions=3)
    async with started_relay(relay_env) as relay:
        held = [
            await RawSmtp.connect(relay.inbound_port),
            await RawSmtp.connect(relay.inbound_port),
            await RawSmtp.connect(relay.submission_port),
        ]
        assert all(c.banner.startswith("220") for c in held)
        for port in (relay.inbound_port, relay.submission_port):
            refused = await RawSmtp.connect(port)
            assert refused.banner.startswith("421 4.3.2"), refused.banner
            assert await refused.reply() == "<closed>"
            await refused.close()
        await held[0].cmd("QUIT")
        await held[0].close()
        await asyncio.sleep(0.2)
        again = await RawSmtp.connect(relay.inbound_port)  # a freed slot is usable again
        assert again.banner.startswith("220"), again.banner
        for client in [again, *held[1:]]:
            await client.close()
    assert any('reason="too many sessions"' in line for line in relay_env.log_lines)


def _chunk(size: int) -> bytes:
    line = b"y" * 98 + b"\r\n"
    return line * (size // len(line))


async def test_max_memory_refuses_data_beyond_the_budget(lab: Lab, relay_env: RelayEnv) -> None:
    set_relay_keys(relay_env, max_memory=200_000, max_message_size=150_000)
    sender, rcpt = envelope_for(relay_env, Path.FORWARDING)
    async with started_relay(relay_env) as relay:
        first = await RawSmtp.connect(relay.inbound_port)
        second = await RawSmtp.connect(relay.inbound_port)
        token = uuid.uuid4().hex
        try:
            for client in (first, second):
                await client.greet()
                await start_transaction(client, sender, rcpt)
            await first.send(f"Subject: {token}\r\n\r\n".encode() + _chunk(120_000))
            await asyncio.sleep(0.5)  # the relay now holds ~120 KB of the first message
            await second.send(b"Subject: second\r\n\r\n" + _chunk(120_000))
            assert (await second.reply()).startswith("421 4.3.2")
            assert await second.reply() == "<closed>"
            await first.send(b".\r\n")  # the first message still completes
            assert (await first.reply()).startswith("250 2.0.0")
            assert (await rest_of_session(first))[-1].startswith("221")
            # The budget was given back: a message of the same size fits again.
            third = await RawSmtp.connect(relay.inbound_port)
            await third.greet()
            await start_transaction(third, sender, rcpt)
            await third.send(b"Subject: third\r\n\r\n" + _chunk(120_000) + b".\r\n")
            assert (await third.reply()).startswith("250 2.0.0")
            await third.close()
            assert await relay.wait_idle(10)
        finally:
            await first.close()
            await second.close()
        assert relay.limits.memory == 0 and relay.limits.sessions == 0
    stored = relay_env.sink_messages()
    assert len(stored) == 2 and not any(b"Subject: second" in raw for raw in stored)
    assert any("memory budget exhausted" in line for line in relay_env.log_lines)
