"""The relay's metrics and health listener (``[relay] metrics_listen``): ``GET /metrics``
(Prometheus text), ``/healthz`` (200 while the process serves) and ``/readyz`` (200 when ready,
503 with a JSON reason otherwise).

It is a deliberately small HTTP/1.x server rather than a general one: it reads one request head
of at most 8 KiB within 5 seconds (a slow or endless head is cut, so a slowloris holds nothing
for long), answers GET and HEAD on exactly three paths and nothing else (no file is ever read,
so no path can reach one), closes the connection after each answer, and serves at most 32
connections at once. Anything else gets 400, 404, 405, 408 or 431 and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from smtpconn.relay.config import ListenAddress
from smtpconn.relay.log import log_event

MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 32
_METHODS = ("GET", "HEAD")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}

# (status, content type, body) for a path
Page = tuple[int, str, bytes]


class HealthServer:
    def __init__(
        self,
        listen: ListenAddress,
        metrics: Callable[[], bytes],
        ready: Callable[[], list[str]],
        *,
        head_timeout: float | None = None,
    ) -> None:
        self.listen = listen
        self._metrics = metrics
        self._ready = ready
        self.head_timeout = HEAD_TIMEOUT if head_timeout is None else head_timeout
        self._server: asyncio.base_events.Server | None = None
        self._open = 0
        self.port = 0

    async def start(self) -> int:
        from smtpconn.errors import UsageError

        try:
            self._server = await asyncio.start_server(
                self._serve, self.listen.host, self.listen.port, limit=MAX_HEAD
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {self.listen} (metrics): {exc.strerror}",
                fix="choose another relay.metrics_listen or stop what uses it",
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._open += 1
        try:
            status, kind, body, method = await self._answer(reader)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                + ("Allow: GET, HEAD\r\n" if status == 405 else "")
                + "Cache-Control: no-store\r\n\r\n"
            )
            writer.write(head.encode("ascii") + (b"" if method == "HEAD" else body))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), self.head_timeout)
        except Exception as exc:  # one bad client must never take the listener down
            log_event("metrics.error", error=repr(exc)[:200])
        finally:
            self._open -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, str]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.head_timeout)
        except TimeoutError:
            return (*_text(408, "request head too slow"), "GET")
        except asyncio.LimitOverrunError:
            return (*_text(431, "request head too large"), "GET")
        except asyncio.IncompleteReadError:
            return (*_text(400, "incomplete request"), "GET")
        parsed = _request_line(head)
        if parsed is None:
            return (*_text(400, "malformed request"), "GET")
        method, path = parsed
        if method not in _METHODS:
            return (*_text(405, "only GET and HEAD"), "GET")
        page = await self._page(path)
        return (*page, method)

    async def _page(self, path: str) -> Page:
        if path == "/healthz":
            return _text(200, "ok")
        if path == "/readyz":
            problems = await asyncio.to_thread(self._ready)
            document: dict[str, Any] = {"ready": not problems, "reasons": problems}
            return 503 if problems else 200, "application/json", json.dumps(document).encode()
        if path == "/metrics":
            body = await asyncio.to_thread(self._metrics)
            return 200, "text/plain; version=0.0.4; charset=utf-8", body
        return _text(404, "not found")


def _text(status: int, text: str) -> Page:
    return status, "text/plain; charset=utf-8", (text + "\n").encode()


def _request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) of ``METHOD SP TARGET SP HTTP/1.x``; None if malformed.
    Header lines are not interpreted: nothing the server does depends on them."""
    line, _, _ = head.partition(b"\r\n")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    method, target, _ = parts
    if not method.isalpha() or not target.startswith("/") or not target.isprintable():
        return None
    return method, target.partition("?")[0]
