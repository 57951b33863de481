"""100 ``RCPT TO`` for the same support address make one copy, not 100: a client without AUTH
could otherwise make the relay hold (and write) 100 copies of a 25 MB message per transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import RelayEnv, RelayProcess

from .rawsmtp import RawSmtp

REPEATS = 100


async def _send_repeated(port: int, rcpt: str, body: bytes) -> str:
    client = await RawSmtp.connect(port)
    try:
        await client.greet()
        assert (await client.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
        spellings = [rcpt, rcpt.upper(), rcpt.capitalize()]
        for index in range(REPEATS):
            reply = await client.cmd(f"RCPT TO:<{spellings[index % 3]}>")
            assert reply.startswith("250"), (index, reply)
        assert (await client.cmd("DATA")).startswith("354")
        await client.send(body + b".\r\n")
        return await client.reply(timeout=60)
    finally:
        await client.close()


def _message(token: str, size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    head = f"From: <someone@good.test>\r\nSubject: {token}\r\n\r\n".encode()
    return head + line * (size // len(line))


async def test_repeated_recipient_gets_one_copy(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    token = uuid.uuid4().hex
    reply = await _send_repeated(
        running_relay.inbound_port, f"forward@{relay_env.domain}", _message(token, 10_000)
    )
    assert reply.startswith("250 2.0.0 OK queued as "), reply
    assert "," not in reply  # one spool entry
    assert await running_relay.wait_idle(10)
    assert [raw for raw in relay_env.sink_messages() if token.encode() in raw] != []
    assert len(relay_env.sink_messages()) == 1
    assert sum("event=inbound.accepted" in line for line in relay_env.log_lines) == 1


def _peak_rss(pid: int) -> int:
    """Bytes: the process's resident-set high-water mark (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_memory_stays_near_one_message_for_repeated_recipients(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    size = 4 * 1024 * 1024
    relay = await asyncio.to_thread(relay_process)
    token = uuid.uuid4().hex
    # Warm up (imports, first session, first delivery) before taking the baseline.
    await _send_repeated(relay.inbound_port, f"forward@{relay_env.domain}", _message("warm", 2000))
    before = _peak_rss(relay.process.pid)
    reply = await _send_repeated(
        relay.inbound_port, f"forward@{relay_env.domain}", _message(token, size)
    )
    assert reply.startswith("250"), reply
    await asyncio.to_thread(relay_env.wait_for_sink, token)
    grown = _peak_rss(relay.process.pid) - before
    # The DATA buffer, the message, its cleaned and its tagged copy, the Maildir sink's read and
    # rewrite: about 6 x the message (measured), never once per recipient (100 x 4 MB).
    assert grown < 12 * size, f"peak memory grew by {grown / size:.1f} x the message size"
