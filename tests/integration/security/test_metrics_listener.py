"""Hostile bytes to the relay's metrics listener (a real relay with ``metrics_listen``): malformed
request lines, huge heads, a slowloris, methods other than GET/HEAD, paths that try to leave the
three pages, a flood of idle connections. Each gets its error status and a closed connection,
never a file's content or a traceback, and the listener (and the SMTP listener) keep serving."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator

import pytest

from smtpconn.relay import httpd
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import RelayEnv, started_relay, write_profile

from .rawsmtp import RawSmtp


@pytest.fixture
async def relay(relay_env: RelayEnv, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Relay]:
    monkeypatch.setattr(httpd, "HEAD_TIMEOUT", 1.5)  # the slowloris test waits this long
    data = tomllib.loads(relay_env.profile.read_text())
    data["relay"]["metrics_listen"] = "127.0.0.1:0"
    write_profile(relay_env.profile, data["addresses"], data["relay"])
    async with started_relay(relay_env) as running:
        yield running


async def _exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, then read until the server closes (what it answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


async def _still_serving(relay: Relay) -> None:
    assert relay.metrics_port
    answer = await _exchange(relay.metrics_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(answer) == 200 and answer.endswith(b"\r\n\r\nok\n"), answer
    smtp = await RawSmtp.connect(relay.inbound_port)
    assert smtp.banner.startswith("220")
    await smtp.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metr\xffics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics\x00 HTTP/1.1\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
        (b"GET /healthz HTTP/1.1\r\n", 400),  # the head never ends: the client half-closes
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
        (b"PUT /readyz HTTP/1.1\r\n\r\n", 405),
        (b"DELETE /healthz HTTP/1.1\r\n\r\n", 405),
        (b"TRACE / HTTP/1.1\r\n\r\n", 405),
        (b"CONNECT 127.0.0.1:25 HTTP/1.1\r\n\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /../../../../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics/../../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET //etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics%00.txt HTTP/1.1\r\n\r\n", 404),
        (b"GET /healthz/ HTTP/1.1\r\n\r\n", 404),
    ],
)
async def test_hostile_requests_get_an_error_and_nothing_else(
    relay: Relay, relay_env: RelayEnv, request_bytes: bytes, status: int
) -> None:
    assert relay.metrics_port
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.metrics_port)
    writer.write(request_bytes)
    if not request_bytes.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in request_bytes:
        writer.write_eof()
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    assert _status(answer) == status, answer
    assert b"root:" not in answer and b"smtpconn_" not in answer
    if status == 405:
        assert b"Allow: GET, HEAD\r\n" in answer
    await _still_serving(relay)
    assert "Traceback" not in relay_env.log_text()


async def test_a_huge_head_is_refused_without_reading_it_all(relay: Relay) -> None:
    assert relay.metrics_port
    huge = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.metrics_port)
    writer.write(huge)
    with pytest.raises(ConnectionError):  # it may reset us while we still write: fine
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
        assert _status(answer) == 431, answer
        raise ConnectionResetError("answered 431")
    writer.close()
    many = (
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(3000)) + b"\r\n"
    )
    answer = await _exchange(relay.metrics_port, many)
    assert _status(answer) in (431, 0), answer[:200]
    await _still_serving(relay)


async def test_a_slowloris_is_cut_and_does_not_block_others(relay: Relay) -> None:
    assert relay.metrics_port
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.metrics_port)
    started = time.monotonic()
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    await writer.drain()
    closed = False
    # One header byte every 0.2 s: steady, but the head never completes in time.
    for _ in range(40):
        try:
            writer.write(b"X")
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        if reader.at_eof():
            closed = True
            break
        await asyncio.sleep(0.2)
        if time.monotonic() - started > 0.5:
            await _still_serving(relay)  # others are served meanwhile
        try:
            data = await asyncio.wait_for(reader.read(200), 0.01)
        except TimeoutError:
            continue
        assert _status(data) == 408, data
        closed = True
        break
    writer.close()
    assert closed and time.monotonic() - started < 5, "the slow head was not cut"
    await _still_serving(relay)


async def test_a_flood_of_idle_connections_is_bounded(relay: Relay) -> None:
    assert relay.metrics_port
    idle = [await asyncio.open_connection("127.0.0.1", relay.metrics_port) for _ in range(40)]
    try:
        # Beyond the cap, a connection is closed at once without an answer.
        late_reader, _ = idle[-1]
        async with asyncio.timeout(5):
            assert await late_reader.read() == b""
    finally:
        for _, writer in idle:
            writer.close()
    await asyncio.sleep(0.1)
    await _still_serving(relay)


async def test_head_answers_without_a_body(relay: Relay) -> None:
    assert relay.metrics_port
    answer = await _exchange(relay.metrics_port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert _status(answer) == 200 and answer.endswith(b"\r\n\r\n"), answer
