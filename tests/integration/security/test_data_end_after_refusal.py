"""After DATA is refused (bare LF, too much data) the relay still ends DATA exactly where the
client does: at CRLF.CRLF, even when the CR and LF before the end line reach it in separate
reads. Otherwise client and relay disagree where DATA ends: the client's next commands are
swallowed as message bytes and the session hangs until ``data_timeout``.

The relay's stream limit is its line length limit (1001 bytes): a BULK read of more than that
without the end marker keeps the last 4 bytes back. Ending the first send with ``\\r\\nab\\r\\n``
makes the relay read ``ab\\r`` (3 bytes after a CRLF) and then ``\\n`` alone: the CR and its LF in
two reads, right before the end line of the second send."""

from __future__ import annotations

import asyncio
import time

import pytest

from lab.lab import Lab
from tests.integration.relay.conftest import RelayEnv, started_relay

from .listeners import Path, envelope_for, open_session, set_relay_keys, start_transaction

# Well over the stream limit, whole CRLF lines, ending in a 2-byte line.
_FILLER = (b"z" * 70 + b"\r\n") * 20 + b"ab\r\n"


@pytest.mark.parametrize(
    ("first", "keys", "refusal"),
    [
        (b"Subject: bare\r\n\r\nbare\nnewline\r\n" + _FILLER, {}, "550 5.6.11"),
        (b"Subject: big\r\n\r\n" + _FILLER, {"max_message_size": 1024}, "552"),
    ],
    ids=["bare-newline", "too-much-data"],
)
async def test_refused_data_ends_at_a_split_crlf_dot_crlf(
    lab: Lab, relay_env: RelayEnv, first: bytes, keys: dict[str, int], refusal: str
) -> None:
    set_relay_keys(relay_env, **keys)  # data_timeout stays at its default (minutes)
    sender, rcpt = envelope_for(relay_env, Path.FORWARDING)
    async with started_relay(relay_env) as relay:
        client = await open_session(lab, relay_env, relay, Path.FORWARDING)
        try:
            await start_transaction(client, sender, rcpt)
            await client.send(first)
            await asyncio.sleep(0.5)  # the relay reads all of it before the end line comes
            started = time.monotonic()
            await client.send(b".\r\n")
            reply = await client.reply(timeout=5)
            assert time.monotonic() - started < 5
            assert reply.startswith(refusal), reply
            # The same connection goes on: the next command is a command, not message bytes.
            assert (await client.cmd("NOOP", timeout=5)).startswith("250")
            assert (await client.cmd("QUIT", timeout=5)).startswith("221")
        finally:
            await client.close()
        await relay.wait_idle(10)
    assert relay_env.sink_messages() == []
    assert not list((relay_env.spool / "inbound").glob("*.msg"))
    assert not [line for line in relay_env.log_lines if ".accepted" in line]
