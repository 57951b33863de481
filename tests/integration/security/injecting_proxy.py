"""A man in the middle who cannot break TLS, for the STARTTLS response-injection attack
(RFC 3207 §5; CVE-2011-0411 and the aiosmtplib/MailKit fixes of the same class).

A real TCP proxy on 127.0.0.1 (a free port) in front of a real server. It forwards bytes both
ways; when the server answers ``220`` to the client's STARTTLS it writes that 220 line *and* the
forged replies to the client in ONE write, then goes transparent so the TLS handshake passes
through untouched. A client that reads what was already buffered as the first replies inside TLS
believes a login or a queue id the server never gave.

It runs its own event loop in a thread, so synchronous tests (the CLI) and asynchronous ones
(an in-process relay) can use it alike; ``stop()`` closes the listener and every connection it
opened and joins the thread. It records what it saw so a test can prove the attack happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# What a client goes on to say inside TLS, in order: EHLO, AUTH, MAIL, RCPT, DATA, the message.
SUBMISSION_REPLIES = (
    b"250-mail.good.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
    b"235 2.7.0 Authentication successful\r\n"
    b"250 2.1.0 Ok\r\n"
    b"250 2.1.5 Ok\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
    b"250 2.0.0 Ok: queued as INJECTED42\r\n"
)


@dataclass
class InjectingProxy:
    upstream_port: int
    injected: bytes = SUBMISSION_REPLIES
    upstream_host: str = "127.0.0.1"
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0
    injections: int = 0  # 220 replies to STARTTLS that got the forged replies appended
    # bytes the client sent after an injection (a ClientHello, or commands inside TLS)
    client_bytes_after_injection: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> InjectingProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="injecting-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the injecting proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            assert not self._thread.is_alive(), "the injecting proxy did not stop"
            self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        state = _Connection()
        try:
            await asyncio.gather(
                self._client_to_server(client_r, server_w, state),
                self._server_to_client(server_r, client_w, state),
            )
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, server_w):
                with contextlib.suppress(Exception):
                    writer.close()
            self._tasks.discard(task)

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection
    ) -> None:
        while chunk := await reader.read(65536):
            if state.injected:
                with self._lock:
                    self.client_bytes_after_injection += len(chunk)
            elif b"STARTTLS" in chunk.upper():
                state.starttls_sent = True  # set before the server can answer it
            writer.write(chunk)
            await writer.drain()
        writer.close()

    async def _server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection
    ) -> None:
        # Line by line in clear text, until the 220 to STARTTLS; raw bytes from then on.
        while not state.injected:
            line = await reader.readline()
            if not line:
                writer.close()
                return
            if state.starttls_sent and line.startswith(b"220 "):
                state.injected = True
                with self._lock:
                    self.injections += 1
                line += self.injected  # one write: the client gets it all in one segment
            writer.write(line)
            await writer.drain()
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.close()


@dataclass
class _Connection:
    starttls_sent: bool = False
    injected: bool = False


@contextmanager
def injecting_proxy(
    upstream_port: int, injected: bytes = SUBMISSION_REPLIES
) -> Iterator[InjectingProxy]:
    proxy = InjectingProxy(upstream_port, injected).start()
    try:
        yield proxy
    finally:
        proxy.stop()
