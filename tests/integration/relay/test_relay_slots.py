"""What a killed relay leaves in the spool's ``slots/`` (real relay, real files).

A message is acknowledged once its record is ``fdatasync``'ed in a pre-created slot; its queue
name (a hard link) is made right after, without waiting for a folder fsync. A relay killed
between the two — or a power cut that loses the link — leaves a whole record only in
``slots/``. The next relay must queue it under the id in its header and deliver it exactly
once, and ``smtpconn queue list`` must show it while no relay runs. A torn record (killed during
the write: never acknowledged) must be removed and never delivered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from smtpconn.relay.slots import SLOTS
from smtpconn.relay.spool import Envelope, Spool, SpoolEntry

from .conftest import RelayEnv, started_relay


def _stranded(env: RelayEnv, token: str) -> SpoolEntry:
    """Spool one forwarded message as the relay does, then take away its queue name: what a
    SIGKILL between the slot's fdatasync and the link leaves."""
    rcpt = env.addresses["outbound-only"]
    message = (
        f"From: someone@good.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\nstranded {token}\r\n"
    ).encode()
    meta = {"tag": "unauthenticated", "mode": "outbound-only", "support_address": rcpt}
    spool = Spool(env.spool)
    spool.lock()
    try:
        [entry] = spool.put_many(
            [(Envelope("inbound", "", (rcpt,), time.time(), meta), message, None)]
        )
    finally:
        spool.unlock()
    assert entry.slot
    entry.path.unlink()
    return entry


def _queue_list(spool: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "smtpconn", "queue", "list", "--spool", str(spool), "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    messages = json.loads(out.stdout)["messages"]
    assert isinstance(messages, list)
    return messages


async def _wait(predicate: object, timeout: float = 20.0) -> bool:
    assert callable(predicate)
    for _ in range(int(timeout / 0.05)):  # the relay runs on this loop: never block it
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_message_left_only_in_its_slot_is_listed_then_delivered_once(
    relay_env: RelayEnv,
) -> None:
    token = f"slot-{uuid.uuid4().hex}"
    entry = _stranded(relay_env, token)
    slot = relay_env.spool / SLOTS / entry.slot
    assert slot.exists()

    listed = _queue_list(relay_env.spool)
    assert [m["id"] for m in listed] == [entry.id]  # the administrator sees it queued

    async with started_relay(relay_env):
        assert await _wait(lambda: any(token.encode() in m for m in relay_env.sink_messages()))
        assert await _wait(lambda: not list((relay_env.spool / "inbound").glob("*.msg")))
        await asyncio.sleep(0.5)  # a second hand-over would come within a poll or two
    messages = [m for m in relay_env.sink_messages() if token.encode() in m]
    assert len(messages) == 1
    assert relay_env.log_text().count(f"event=inbound.delivered id={entry.id}") == 1
    assert not slot.exists()
    assert _queue_list(relay_env.spool) == []


async def test_a_torn_slot_is_removed_and_nothing_is_delivered(relay_env: RelayEnv) -> None:
    token = f"torn-{uuid.uuid4().hex}"
    entry = _stranded(relay_env, token)
    slot = relay_env.spool / SLOTS / entry.slot
    data = slot.read_bytes()
    slot.write_bytes(data[: len(data) - 7])  # killed during the write: never acknowledged
    assert _queue_list(relay_env.spool) == []

    async with started_relay(relay_env):
        assert not slot.exists()
        await asyncio.sleep(1.0)  # several polls of the queue
    assert not [m for m in relay_env.sink_messages() if token.encode() in m]
    assert "event=inbound.delivered" not in relay_env.log_text()
    assert not list((relay_env.spool / "inbound").iterdir())
