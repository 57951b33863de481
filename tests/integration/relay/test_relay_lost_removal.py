"""A spool removal lost to a power cut must not duplicate a message in the Maildir sink.

The Maildir sink's hand-over removes the spool entry without a folder fsync (the delivery
agent's unlinks, or ``Spool.remove(durably=False)`` in a worker thread): a power cut can undo
the unlink (a process crash cannot, the
kernel keeps it). The next run then finds the entry again and hands it over a second time; the
sink must find its first copy by spool id, in ``new/`` or already read in ``cur/``, and add none.
This test leaves exactly what such a power cut leaves: the delivered message's spool file back
in ``inbound/`` when the relay starts again."""

from __future__ import annotations

import asyncio
import os
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smtpconn.relay.spool import Spool, SpoolEntry

from .conftest import RelayEnv, started_relay


async def _send(port: int, rcpt: str, token: str) -> None:
    message = EmailMessage()
    message["From"] = "someone@good.test"
    message["To"] = rcpt
    message["Subject"] = token
    message.set_content("lost removal\n")
    await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False, timeout=10)


async def _wait_in_sink(env: RelayEnv, tokens: list[str], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):  # the relay runs on this loop: never block it
        messages = env.sink_messages()
        if all(any(t.encode() in raw for raw in messages) for t in tokens):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not all messages reached the Maildir sink")


async def _wait_empty(spool: Path, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if not list((spool / "inbound").glob("*.msg")):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the spool entries were not handed over")


async def test_a_lost_spool_removal_hands_over_again_without_a_duplicate(
    relay_env: RelayEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = relay_env.root / "kept"
    kept.mkdir()
    real_put_many = Spool.put_many

    # A second name for each spooled file, whoever removes it after the hand-over (the Maildir
    # delivery agent, or a worker thread while the agent starts): a removal undone.
    def put_keeping_a_link(self: Spool, *args: Any, **kwargs: Any) -> list[SpoolEntry]:
        entries = real_put_many(self, *args, **kwargs)
        for entry in entries:
            os.link(entry.path, kept / entry.path.name)
        return entries

    monkeypatch.setattr(Spool, "put_many", put_keeping_a_link)
    rcpt = relay_env.addresses["outbound-only"]
    tokens = [f"lost-{uuid.uuid4().hex}" for _ in range(2)]
    async with started_relay(relay_env) as relay:
        for token in tokens:
            await _send(relay.inbound_port, rcpt, token)
        await _wait_in_sink(relay_env, tokens)
        await _wait_empty(relay_env.spool)
    monkeypatch.setattr(Spool, "put_many", real_put_many)
    assert len(list(kept.iterdir())) == 2
    # The help desk has already read one of them (Maildir: new/ -> cur/ with flags).
    read = sorted((relay_env.maildir / "new").iterdir())[0]
    read.rename(relay_env.maildir / "cur" / f"{read.name}:2,S")
    for path in kept.iterdir():  # what a power cut that lost both unlinks leaves
        os.replace(path, relay_env.spool / "inbound" / path.name)

    async with started_relay(relay_env):
        await _wait_empty(relay_env.spool)
    messages = relay_env.sink_messages()
    assert len(messages) == 2
    for token in tokens:
        assert sum(token.encode() in raw for raw in messages) == 1
    assert relay_env.log_text().count("event=inbound.delivered") == 4
