"""Outbound connection cache: replies to the same customer server reuse an authenticated
session (``smtpconn.smtp.delivery.DeliverySession``) instead of paying TCP + TLS + AUTH each.

Like Postfix's connection cache: a session goes back to the pool after a message and is reused
by the next reply for the same server (same host, port, security, login) within
``IDLE_SECONDS``; after that, or after ``MAX_MESSAGES`` messages, it is closed with QUIT. Each
session carries one message at a time, so the lane's concurrency bounds the busy connections.
A server with ``max_connections`` counts idle and closing ones too: before a new connection to
that ``host:port`` the pool waits for its QUITs to finish and, when the limit would be passed,
closes idle sessions of other logins on the same server first, so the server never sees more.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

from smtpconn.profile.model import OutboundServer
from smtpconn.profile.wire import server_spec
from smtpconn.smtp.delivery import DeliveryResult, DeliverySession

IDLE_SECONDS = 5.0  # well under servers' idle timeouts (Postfix smtpd: 300 s), like Postfix's 2 s
MAX_MESSAGES = 100  # per connection, then a fresh one (Postfix: smtp_connection_reuse_count_limit)

_Key = tuple[str, int, str, str, str]
_Server = tuple[str, int]


def _key(server: OutboundServer) -> _Key:
    return (
        server.host.lower(),
        server.port,
        str(server.security),
        str(server.auth),
        server.username,
    )


class SessionPool:
    def __init__(
        self, *, idle_seconds: float = IDLE_SECONDS, max_messages: int = MAX_MESSAGES
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_messages = max_messages
        self._idle: dict[_Key, list[tuple[DeliverySession, asyncio.TimerHandle]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closing_at: dict[_Server, set[asyncio.Task[None]]] = {}
        self._open: dict[_Server, int] = {}  # sessions per server not yet closed
        self.opened = 0  # sessions created (for tests and the log)

    async def deliver(
        self,
        server: OutboundServer,
        secret: Callable[[], Awaitable[str]],
        mail_from: str,
        rcpts: list[str],
        message: bytes,
        *,
        resolve: Callable[[], Awaitable[str | None]],
        tls_context: ssl.SSLContext,
        ehlo_name: str,
        timeout: float,
        max_connections: int | None = None,
        smtputf8: bool = False,
    ) -> DeliveryResult:
        """One message, on an idle session for ``server`` if there is one, else a new one
        (``secret`` gives the credential to log in with and ``resolve`` the address to connect
        to: both only asked for a new session, which keeps them for its reconnections).
        ``secret``'s exceptions propagate, with nothing opened."""
        key = _key(server)
        session = self._take(key)
        if session is None:
            login_secret = await secret()
            await self._make_room(key[:2], max_connections)
            session = DeliverySession(
                server_spec(server),
                login_secret,
                tls_context=tls_context,
                ehlo_name=ehlo_name,
                timeout=timeout,
                address=await resolve(),
            )
            self.opened += 1
            self._open[key[:2]] = self._open.get(key[:2], 0) + 1
        try:
            result = await session.send(mail_from, rcpts, message, smtputf8=smtputf8)
        except BaseException:
            await session.close()
            self._closed(key[:2])
            raise
        self._give_back(key, session)
        return result

    async def _make_room(self, server: _Server, limit: int | None) -> None:
        """Before a new connection to a server with a connection limit: let earlier QUITs
        finish, and close idle sessions of other logins while the limit is reached."""
        if limit is None:
            return
        closing = self._closing_at.get(server)
        if closing:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(closing), timeout=5)
        for key in [k for k in self._idle if k[:2] == server]:
            if self._open.get(server, 0) < limit:
                break
            for session, timer in self._idle.pop(key, []):
                timer.cancel()
                await session.close()
                self._closed(server)

    def _closed(self, server: _Server) -> None:
        left = self._open.get(server, 0) - 1
        if left > 0:
            self._open[server] = left
        else:
            self._open.pop(server, None)

    def _take(self, key: _Key) -> DeliverySession | None:
        idle = self._idle.get(key)
        while idle:
            session, timer = idle.pop()  # the most recently used: least likely to be stale
            timer.cancel()
            if session.connected:
                return session
            self._close_later(key, session)
        return None

    def _give_back(self, key: _Key, session: DeliverySession) -> None:
        if not session.connected or session.messages >= self.max_messages:
            self._close_later(key, session)
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.idle_seconds, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, timer))

    def _expire(self, key: _Key, session: DeliverySession) -> None:
        idle = self._idle.get(key, [])
        for index, (candidate, _timer) in enumerate(idle):
            if candidate is session:
                del idle[index]
                self._close_later(key, session)
                break
        if not idle:
            self._idle.pop(key, None)

    def _close_later(self, key: _Key, session: DeliverySession) -> None:
        server = key[:2]
        task = asyncio.ensure_future(session.close())
        self._closing.add(task)
        at = self._closing_at.setdefault(server, set())
        at.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._closing.discard(task)
            at.discard(task)
            if not at and self._closing_at.get(server) is at:
                del self._closing_at[server]
            self._closed(server)

        task.add_done_callback(done)

    @property
    def idle(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def close(self) -> None:
        """QUIT every idle session (the relay is stopping)."""
        for key, idle in self._idle.items():
            for session, timer in idle:
                timer.cancel()
                self._close_later(key, session)
        self._idle.clear()
        if self._closing:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._closing), timeout=5)
