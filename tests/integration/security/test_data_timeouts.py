"""DATA timeouts: the idle timer is reset by every byte of DATA, and a separate deadline bounds
the whole DATA phase, so a slowloris is cut while a slow but steady sender is not."""

from __future__ import annotations

import asyncio
import time
import uuid

from lab.lab import Lab
from tests.integration.relay.conftest import RelayEnv, started_relay

from .listeners import Path, envelope_for, set_relay_keys, start_transaction
from .rawsmtp import RawSmtp


async def _trickle(client: RawSmtp, data: bytes, gap: float) -> str | None:
    """Send ``data`` one byte every ``gap`` s; the relay's reply if it answered meanwhile."""
    for byte in data:
        try:
            await client.send(bytes([byte]))
        except (ConnectionError, OSError):
            break
        try:
            return await client.reply(timeout=gap)
        except TimeoutError:
            continue
    return None


async def test_slowloris_is_cut_at_the_data_deadline(lab: Lab, relay_env: RelayEnv) -> None:
    set_relay_keys(relay_env, idle_timeout=1, data_timeout=3)
    sender, rcpt = envelope_for(relay_env, Path.FORWARDING)
    async with started_relay(relay_env) as relay:
        client = await RawSmtp.connect(relay.inbound_port)
        try:
            await client.greet()
            await start_transaction(client, sender, rcpt)
            started = time.monotonic()
            # One byte every 0.3 s keeps the idle timer (1 s) from ever firing.
            reply = await _trickle(client, b"Subject: slow\r\n\r\n" + b"z" * 100, 0.3)
            elapsed = time.monotonic() - started
        finally:
            await client.close()
        await relay.wait_idle(5)
    assert reply is not None and reply.startswith("421 4.4.2"), reply
    assert 2.5 < elapsed < 5.0, elapsed
    assert relay_env.sink_messages() == []
    assert any(
        "event=session.timeout" in line and "phase=data" in line for line in relay_env.log_lines
    )


async def test_steady_sender_outlasts_the_idle_timeout(lab: Lab, relay_env: RelayEnv) -> None:
    set_relay_keys(relay_env, idle_timeout=1, data_timeout=10)
    sender, rcpt = envelope_for(relay_env, Path.FORWARDING)
    token = uuid.uuid4().hex
    async with started_relay(relay_env) as relay:
        client = await RawSmtp.connect(relay.inbound_port)
        try:
            await client.greet()
            await start_transaction(client, sender, rcpt)
            message = f"Subject: {token}\r\n\r\n".encode() + b"steady line\r\n" * 4
            # Pieces smaller than a line, 0.4 s apart: 3 s of DATA against a 1 s idle timer.
            pieces = [message[i : i + 8] for i in range(0, len(message), 8)]
            assert len(pieces) * 0.4 > 2.5
            for piece in pieces:
                await client.send(piece)
                await asyncio.sleep(0.4)
            reply = await client.cmd(b".\r\n")
            assert reply.startswith("250 2.0.0"), reply
        finally:
            await client.close()
        assert await relay.wait_idle(10)
    assert any(token.encode() in raw for raw in relay_env.sink_messages())


async def test_idle_session_is_cut_with_421(lab: Lab, relay_env: RelayEnv) -> None:
    set_relay_keys(relay_env, idle_timeout=1)
    async with started_relay(relay_env) as relay:
        client = await RawSmtp.connect(relay.inbound_port)
        try:
            await client.greet()
            reply = await client.reply(timeout=5)
        finally:
            await client.close()
    assert reply.startswith("421 4.4.2"), reply
