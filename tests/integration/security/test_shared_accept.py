"""Hostile clients against the accept queue the relay processes share (``processes = 2``):
connections reset right after the handshake (SO_LINGER 0), on the plain and the implicit-TLS
port, and connections that never say anything (nor start TLS) must leave no session counted and
stop neither process from accepting: afterwards each process again takes its full share, every
message reaches the sink, and no process logged an internal error."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Callable

import pytest

from tests.integration.relay.conftest import RelayEnv, RelayProcess
from tests.integration.relay.test_relay_accept import send_one, shards_of, start_two, wait_sink

from .rawsmtp import RawSmtp

RESETS = 300
SILENT = 6
MAX_SESSIONS = 4  # 2 per process

_TLS_PORT = re.compile(r"event=relay\.ready .*inbound_tls=[\d.]+:(\d+)")


async def _reset(port: int) -> None:
    """Connect and abort at once: the relay's accept() gets a connection already reset."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    finally:
        sock.close()


async def _silent(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _full_share_each(relay: RelayProcess, env: RelayEnv) -> None:
    """Both processes accept again, each up to its share: 4 sessions greeted, 2 each."""
    held: list[RawSmtp] = []
    for _ in range(150):  # the relay sees the last resets and closes a moment later
        client = await RawSmtp.connect(relay.inbound_port)
        if client.banner.startswith("220"):
            held.append(client)
            if len(held) == MAX_SESSIONS:
                break
        else:
            await client.close()
            await asyncio.sleep(0.1)
            for other in held:  # keep them within the short idle timeout
                assert (await other.cmd("NOOP")).startswith("250")
    assert len(held) == MAX_SESSIONS
    tokens = [await send_one(c, env.addresses["outbound-only"]) for c in held]
    await wait_sink(env, tokens)
    assert shards_of(relay, tokens) == {"0": 2, "1": 2}
    for client in held:
        await client.close()


@pytest.mark.parametrize("event_loop_kind", ["uvloop", "asyncio"])
async def test_resets_and_silent_clients_stop_no_process_from_accepting(
    relay_env: RelayEnv,
    relay_process: Callable[..., RelayProcess],
    monkeypatch: pytest.MonkeyPatch,
    event_loop_kind: str,
) -> None:
    # the relay's loop (uvloop by default): both must serve the shared socket, TLS included
    monkeypatch.setenv("SMTPCONN_EVENT_LOOP", event_loop_kind)
    relay = start_two(
        relay_env,
        relay_process,
        max_sessions=MAX_SESSIONS,
        inbound_tls_listen="127.0.0.1:0",
    )
    found = _TLS_PORT.search(relay.log.read_text())
    assert found, relay.log.read_text()
    tls_port = int(found.group(1))

    silent = [await _silent(port) for port in (relay.inbound_port, tls_port) for _ in range(3)]
    for _ in range(RESETS // 50):
        await asyncio.gather(
            *(_reset(p) for p in (relay.inbound_port, tls_port) for _ in range(25))
        )
    for sock in silent:
        sock.close()

    await _full_share_each(relay, relay_env)
    log = relay.log.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log
    assert "level=error" not in log, log
    assert relay.process.poll() is None
