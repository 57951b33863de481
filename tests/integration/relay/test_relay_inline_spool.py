"""Where the inbound spool write runs: on the event loop while the session is the only one its
process serves, in a worker thread as soon as another is open, and in worker threads for a
while after a slow write (a busy or failing disk must not hold the loop twice)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smtpconn.relay import inbound
from smtpconn.relay.runtime import Relay

from .conftest import RelayEnv
from .test_relay_inbound import send_direct


@pytest.fixture
def spool_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The spool writes sent to a worker thread."""
    sent: list[str] = []
    real = asyncio.to_thread

    async def counting(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if getattr(func, "__name__", "") == "put_many":
            sent.append("put_many")
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return sent


async def _forward(relay: Relay, env: RelayEnv) -> bytes:
    """One message to the outbound-only address (no AUTH needed), as its own session."""
    token = f"inline-{uuid.uuid4().hex}"
    result = await asyncio.to_thread(
        send_direct, relay.inbound_port, env.addresses["outbound-only"], token, tls=None
    )
    assert result.ok, result.transcript
    return await asyncio.to_thread(env.wait_for_sink, token)


@pytest.fixture
def other_session(running_relay: Relay) -> Iterator[Callable[[], None]]:
    """Open a second session (greeted, then silent) on demand."""
    opened: list[socket.socket] = []

    def open_one() -> None:
        sock = socket.create_connection(("127.0.0.1", running_relay.inbound_port), timeout=5)
        assert sock.recv(512).startswith(b"220")
        opened.append(sock)

    yield open_one
    for sock in opened:
        sock.close()


async def test_a_lone_session_is_spooled_on_the_loop(
    relay_env: RelayEnv, running_relay: Relay, spool_trips: list[str]
) -> None:
    for _ in range(3):
        raw = await _forward(running_relay, relay_env)
        assert b"X-Smtpconn-Tag: unauthenticated" in raw
    assert spool_trips == []


async def test_with_another_session_open_the_write_goes_to_a_thread(
    relay_env: RelayEnv,
    running_relay: Relay,
    spool_trips: list[str],
    other_session: Callable[[], None],
) -> None:
    await asyncio.to_thread(other_session)
    await _forward(running_relay, relay_env)
    assert spool_trips == ["put_many"]


async def test_after_a_slow_write_the_next_ones_go_to_threads(
    relay_env: RelayEnv,
    running_relay: Relay,
    spool_trips: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inbound, "SLOW_WRITE", -1.0)  # every write counts as slow
    await _forward(running_relay, relay_env)
    assert spool_trips == []  # this one ran on the loop, and was "slow"
    await _forward(running_relay, relay_env)
    await _forward(running_relay, relay_env)
    assert spool_trips == ["put_many", "put_many"]


async def test_the_back_off_is_what_sends_them_to_threads(
    relay_env: RelayEnv,
    running_relay: Relay,
    spool_trips: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inbound, "SLOW_WRITE", -1.0)
    monkeypatch.setattr(inbound, "SLOW_WRITE_BACKOFF", 0.0)
    for _ in range(2):
        await _forward(running_relay, relay_env)
    assert spool_trips == []
