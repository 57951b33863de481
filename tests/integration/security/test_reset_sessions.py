"""Clients that reset their connection (SO_LINGER 0) as it begins, right after the banner, in
the middle of the STARTTLS handshake or after a command they never read the reply of: every
such session must be released at once, not held until the idle timeout. Otherwise cheap resets
fill ``max_sessions`` (and one address's quota) and real clients get ``421`` for minutes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import tomllib
from collections.abc import Awaitable, Callable

import pytest

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import RelayEnv, started_relay, write_profile

from .rawsmtp import RawSmtp

MAX_SESSIONS = 4
ROUNDS = 60


def _abort(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _connected(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _line(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(10):
        while not data.endswith(b"\r\n"):
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                break
            data += chunk
    return data


async def reset_at_once(port: int, _: Lab) -> None:
    _abort(await _connected(port))


async def close_at_once(port: int, _: Lab) -> None:
    """An orderly close (FIN) rather than a reset, before the banner."""
    (await _connected(port)).close()


async def reset_after_banner(port: int, _: Lab) -> None:
    sock = await _connected(port)
    await _line(sock)
    _abort(sock)


async def reset_after_unread_ehlo(port: int, _: Lab) -> None:
    sock = await _connected(port)
    await asyncio.get_running_loop().sock_sendall(sock, b"EHLO client.example\r\n" * 40)
    _abort(sock)


async def reset_in_starttls(port: int, lab: Lab) -> None:
    """STARTTLS accepted, then the first flight of the handshake (or part of it), then RST."""
    loop = asyncio.get_running_loop()
    sock = await _connected(port)
    await _line(sock)
    await loop.sock_sendall(sock, b"EHLO client.example\r\nSTARTTLS\r\n")
    seen = b""
    async with asyncio.timeout(10):
        while b"220 " not in seen.split(b"\r\n250 ", 1)[-1]:
            seen += await loop.sock_recv(sock, 4096)
    context = ssl.create_default_context(cafile=str(lab.ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="relay.helpdesk.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    await loop.sock_sendall(sock, hello)
    await asyncio.sleep(0)
    _abort(sock)


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loops the relay runs on (cli/relay.py): they order I/O and call_soon differently."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


Attack = Callable[[int, Lab], Awaitable[None]]


async def _counted(relay: Relay, want: int, wait: float = 5.0) -> int:
    """The relay's session count once it settles at ``want`` (or what it is after ``wait``)."""
    async with asyncio.timeout(wait + 1):
        for _ in range(int(wait / 0.05)):
            if relay.limits.sessions == want:
                break
            await asyncio.sleep(0.05)
    return relay.limits.sessions


def _limits(env: RelayEnv) -> None:
    data = tomllib.loads(env.profile.read_text())
    data["relay"].update(max_sessions=MAX_SESSIONS, max_connections_per_ip=MAX_SESSIONS)
    write_profile(env.profile, data["addresses"], data["relay"])


async def _attack_then_serve(env: RelayEnv, lab: Lab, attack: Attack) -> None:
    async with started_relay(env) as relay:
        port = relay.inbound_port
        for _ in range(ROUNDS // MAX_SESSIONS):
            await asyncio.gather(*(attack(port, lab) for _ in range(MAX_SESSIONS)))
        assert await _counted(relay, 0) == 0
        assert all(not t.per_ip and not t.sessions for t in relay._trackers)
        held = [await RawSmtp.connect(port) for _ in range(MAX_SESSIONS)]
        assert [c.banner[:3] for c in held] == ["220"] * MAX_SESSIONS
        for client in held:
            await client.close()
        assert await _counted(relay, 0) == 0


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
@pytest.mark.parametrize(
    "attack",
    [reset_at_once, close_at_once, reset_after_banner, reset_after_unread_ehlo, reset_in_starttls],
    ids=lambda a: a.__name__,
)
def test_reset_sessions_are_released_at_once(
    relay_env: RelayEnv, lab: Lab, attack: Attack, loop_kind: str
) -> None:
    _limits(relay_env)  # idle_timeout stays at its default (300 s)
    with asyncio.Runner(loop_factory=_loop_factory(loop_kind)) as runner:
        runner.run(_attack_then_serve(relay_env, lab, attack))
