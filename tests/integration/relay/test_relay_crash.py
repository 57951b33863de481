"""Durability: SIGKILL the relay in the middle of a stream of messages; after a restart every
message that got a 250 reaches the sink (at least once)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from email.message import EmailMessage

import aiosmtplib

from .conftest import RelayEnv, RelayProcess

TOTAL = 200
KILL_AFTER = 60
CONNECTIONS = 4


async def _stream(
    port: int,
    rcpt: str,
    tokens: list[str],
    acked: list[str],
    killed: asyncio.Event,
    proc: RelayProcess,
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
    try:
        await client.connect()
        for t in tokens:
            message = EmailMessage()
            message["From"] = "someone@good.test"
            message["To"] = rcpt
            message["Subject"] = t
            message.set_content("crash test\n")
            await client.send_message(message)
            acked.append(t)  # only after the 250
            if len(acked) >= KILL_AFTER and not killed.is_set():
                killed.set()
                os.kill(proc.process.pid, signal.SIGKILL)
    except (aiosmtplib.SMTPException, OSError):
        pass  # the relay died under us: what was not acknowledged does not count


async def test_sigkill_loses_nothing_acknowledged(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    first = relay_process()
    rcpt = relay_env.addresses["outbound-only"]
    tokens = [f"crash-{uuid.uuid4().hex}" for _ in range(TOTAL)]
    acked: list[str] = []
    killed = asyncio.Event()
    await asyncio.gather(
        *(
            _stream(first.inbound_port, rcpt, tokens[i::CONNECTIONS], acked, killed, first)
            for i in range(CONNECTIONS)
        )
    )
    assert killed.is_set(), "the relay was not killed mid-stream"
    await asyncio.to_thread(first.process.wait, 10)
    assert first.process.returncode == -signal.SIGKILL
    assert len(acked) >= KILL_AFTER

    relay_process()  # same spool: picks up where the dead one stopped
    missing = set(acked)
    for _ in range(600):
        text = b"\n".join(relay_env.sink_messages())
        missing = {t for t in missing if t.encode() not in text}
        if not missing:
            break
        await asyncio.sleep(0.05)
    assert not missing, f"{len(missing)} acknowledged message(s) lost"


async def test_sigterm_stops_cleanly(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    proc = relay_process()
    proc.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.process.wait, 20)
    assert code == 0
    log = proc.log.read_text()
    assert "event=relay.stopped" in log and "Traceback" not in log
