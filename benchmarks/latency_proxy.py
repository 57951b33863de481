"""A loopback proxy that adds a fixed one-way delay, so loopback benchmarks behave like a network.

On loopback every round trip is ~free, which hides exactly what matters for a tool that checks
hundreds of domains: how many round trips it waits for *in sequence*. This proxy puts a fixed
delay on each direction (default 25 ms one way = 50 ms RTT) for:

* UDP (DNS): every datagram is delivered ``delay`` seconds after it arrived, both ways;
* TCP (DNS over TCP, SMTP): every chunk is delivered ``delay`` after it arrived, in order, and a
  new connection reaches the server 3 one-way delays after it was accepted (SYN, SYN-ACK, ACK), so
  a server-speaks-first protocol such as SMTP sees its greeting 2 RTT after connect(), as on a
  real network. Bandwidth is not limited; only latency is added.

Bounded and self-stopping: it listens on loopback addresses only (127.0.0.0/8), holds at most
``max_connections`` TCP connections and ``max_udp_peers`` UDP clients at once, stops reading a
direction while more than ``max_buffer`` bytes of it are in flight, and stops by itself after
``lifetime`` seconds even if nobody calls :meth:`LatencyProxy.stop`.

    with LatencyProxy(("127.0.0.1", nsd_port), delay=0.025) as proxy:
        proxy.address            # "127.0.0.1:PORT": UDP and TCP on the same port

From the shell (runs until ``--lifetime`` or Ctrl-C)::

    python -m benchmarks.latency_proxy --target 127.0.0.1:5353 --listen 127.0.0.2:53
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

DEFAULT_DELAY = 0.025
DEFAULT_LIFETIME = 900.0
_CHUNK = 65536
_UDP_IDLE = 30.0  # a UDP client silent this long loses its upstream socket


@dataclass
class ProxyStats:
    udp_datagrams: int = 0  # client -> server
    tcp_connections: int = 0
    tcp_refused: int = 0  # over max_connections
    bytes_up: int = 0
    bytes_down: int = 0
    peak_tcp_connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                "udp_datagrams": self.udp_datagrams,
                "tcp_connections": self.tcp_connections,
                "tcp_refused": self.tcp_refused,
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "peak_tcp_connections": self.peak_tcp_connections,
            }


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the latency proxy listens on loopback only, not {host}")


class _DelayedPipe:
    """One direction of a TCP connection: read, hold each chunk ``delay`` seconds, write."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        delay: float,
        max_buffer: int,
        count: list[int],
    ) -> None:
        self.reader = reader
        self.delay = delay
        self.max_buffer = max_buffer
        self.count = count
        self.queue: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.eof = False
        self.changed = asyncio.Event()

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self.buffered > self.max_buffer:
                    self.changed.clear()
                    await self.changed.wait()
                data = await self.reader.read(_CHUNK)
                if not data:
                    break
                self.queue.append((loop.time() + self.delay, data))
                self.buffered += len(data)
                self.count[0] += len(data)
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            # The close travels with the same delay as the data before it.
            self.queue.append((loop.time() + self.delay, b""))
            self.changed.set()

    async def write_loop(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self.queue:
                    self.changed.clear()
                    await self.changed.wait()
                due, data = self.queue.popleft()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    break
                self.buffered -= len(data)
                self.changed.set()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass


class _UdpUpstream(asyncio.DatagramProtocol):
    """The proxy's socket towards the server for one UDP client."""

    def __init__(self, proxy: _UdpFront, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last_used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last_used = time.monotonic()
        self.proxy.send_to_client(data, self.client)


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, owner: LatencyProxy) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: dict[tuple[str, int], _UdpUpstream] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}
        self.opening: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        owner = self.owner
        with owner.stats._lock:
            owner.stats.udp_datagrams += 1
            owner.stats.bytes_up += len(data)
        loop = asyncio.get_running_loop()
        loop.call_later(owner.delay, self._forward, data, addr)

    def _forward(self, data: bytes, client: tuple[str, int]) -> None:
        peer = self.peers.get(client)
        if peer is not None and peer.transport is not None:
            peer.last_used = time.monotonic()
            peer.transport.sendto(data)
            return
        if client in self.pending:
            self.pending[client].append(data)
            return
        if len(self.peers) + len(self.pending) >= self.owner.max_udp_peers:
            self._expire(force=True)
            if len(self.peers) + len(self.pending) >= self.owner.max_udp_peers:
                return  # dropped, as a congested network would; DNS clients retry
        self.pending[client] = [data]
        task = asyncio.ensure_future(self._open(client))
        self.opening.add(task)
        task.add_done_callback(self.opening.discard)

    async def _open(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_datagram_endpoint(
                lambda: _UdpUpstream(self, client), remote_addr=self.owner.target
            )
        except OSError:
            self.pending.pop(client, None)
            return
        self.peers[client] = proto
        for data in self.pending.pop(client, []):
            assert proto.transport is not None
            proto.transport.sendto(data)

    def send_to_client(self, data: bytes, client: tuple[str, int]) -> None:
        with self.owner.stats._lock:
            self.owner.stats.bytes_down += len(data)
        loop = asyncio.get_running_loop()
        loop.call_later(self.owner.delay, self._deliver, data, client)

    def _deliver(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def _expire(self, force: bool = False) -> None:
        now = time.monotonic()
        for client, peer in list(self.peers.items()):
            if force or now - peer.last_used > _UDP_IDLE:
                if peer.transport is not None:
                    peer.transport.close()
                del self.peers[client]
                if force:
                    return

    def close(self) -> None:
        for peer in self.peers.values():
            if peer.transport is not None:
                peer.transport.close()
        self.peers.clear()
        if self.transport is not None:
            self.transport.close()


class LatencyProxy:
    """UDP + TCP proxy from ``listen`` (loopback) to ``target`` with ``delay`` seconds each way.

    Runs its own event loop in a daemon thread, so it serves synchronous callers, subprocesses
    and other event loops alike without sharing their loop.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay: float = DEFAULT_DELAY,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        udp: bool = True,
        tcp: bool = True,
        lifetime: float = DEFAULT_LIFETIME,
        max_connections: int = 1024,
        max_udp_peers: int = 4096,
        max_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        _check_loopback(listen[0])
        _check_loopback(target[0])
        if not udp and not tcp:
            raise ValueError("enable UDP, TCP or both")
        self.target = target
        self.delay = delay
        self.listen_host = listen[0]
        self.port = listen[1]
        self.udp = udp
        self.tcp = tcp
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.max_udp_peers = max_udp_peers
        self.max_buffer = max_buffer
        self.stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._stop_request: asyncio.Event | None = None
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return self.listen_host

    @property
    def address(self) -> str:
        """``host:port`` as ``--resolver`` takes it."""
        return f"{self.listen_host}:{self.port}"

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> LatencyProxy:
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("latency proxy did not start")
        if self._error is not None:
            raise RuntimeError(f"latency proxy failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, request = self._loop, self._stop_request
        if loop is not None and request is not None and not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(request.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), never lost in a thread
            self._error = exc
            self._ready.set()
        finally:
            self._stopped.set()

    def _bind_sockets(self) -> tuple[socket.socket | None, socket.socket | None]:
        """TCP and UDP sockets on one port (a resolver address names a single port)."""
        for _ in range(50):
            tcp_sock = udp_sock = None
            try:
                if self.tcp:
                    tcp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    tcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    tcp_sock.bind((self.listen_host, self.port))
                    port = tcp_sock.getsockname()[1]
                else:
                    port = self.port
                if self.udp:
                    udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    udp_sock.bind((self.listen_host, port))
                    port = udp_sock.getsockname()[1]
                self.port = port
                return tcp_sock, udp_sock
            except OSError:
                for s in (tcp_sock, udp_sock):
                    if s is not None:
                        s.close()
                if self.port != 0:
                    raise
        raise OSError("no port free for both UDP and TCP")

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_request = asyncio.Event()
        tcp_sock, udp_sock = self._bind_sockets()
        server = None
        front = None
        if tcp_sock is not None:
            tcp_sock.listen(512)
            server = await asyncio.start_server(self._handle, sock=tcp_sock, limit=_CHUNK)
        if udp_sock is not None:
            _, front = await loop.create_datagram_endpoint(lambda: _UdpFront(self), sock=udp_sock)
        self._ready.set()
        try:
            deadline = loop.time() + self.lifetime
            while not self._stop_request.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break  # self-stop: a forgotten proxy never outlives its benchmark
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_request.wait(), min(remaining, 5.0))
                if front is not None:
                    front._expire()
        finally:
            if server is not None:
                server.close()
            if front is not None:
                front.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._active >= self.max_connections:
            with self.stats._lock:
                self.stats.tcp_refused += 1
            writer.close()
            return
        self._tasks.add(task)
        self._active += 1
        with self.stats._lock:
            self.stats.tcp_connections += 1
            self.stats.peak_tcp_connections = max(self.stats.peak_tcp_connections, self._active)
        up_count = [0]
        down_count = [0]
        up = _DelayedPipe(reader, self.delay, self.max_buffer, up_count)
        up_reader = asyncio.ensure_future(up.read_loop())
        server_writer: asyncio.StreamWriter | None = None
        down_reader: asyncio.Future[None] | None = None
        try:
            await asyncio.sleep(3 * self.delay)  # the TCP handshake's three one-way trips
            try:
                server_reader, server_writer = await asyncio.open_connection(
                    *self.target, limit=_CHUNK
                )
            except OSError:
                return
            down = _DelayedPipe(server_reader, self.delay, self.max_buffer, down_count)
            down_reader = asyncio.ensure_future(down.read_loop())
            # Each write loop ends at its side's EOF or at an error; once both have, the readers
            # are cancelled, so a vanished peer can never leave the other direction hanging.
            await asyncio.gather(up.write_loop(server_writer), down.write_loop(writer))
        except asyncio.CancelledError:
            # The proxy is stopping with this connection still open: the connection handler's
            # task ends here, quietly (asyncio printed a CancelledError traceback per run).
            pass
        finally:
            up_reader.cancel()
            if down_reader is not None:
                down_reader.cancel()
            for w in (writer, server_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            self._active -= 1
            self._tasks.discard(task)
            with self.stats._lock:
                self.stats.bytes_up += up_count[0]
                self.stats.bytes_down += down_count[0]


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the server (loopback)")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (loopback)")
    ap.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="seconds, one way")
    ap.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME)
    ap.add_argument("--no-udp", action="store_true")
    ap.add_argument("--no-tcp", action="store_true")
    args = ap.parse_args(argv)
    proxy = LatencyProxy(
        _host_port(args.target),
        delay=args.delay,
        listen=_host_port(args.listen),
        udp=not args.no_udp,
        tcp=not args.no_tcp,
        lifetime=args.lifetime,
    )
    proxy.start()
    print(
        f"latency proxy {proxy.address} -> {args.target} (+{args.delay * 1000:.0f} ms each way)",
        flush=True,
    )
    try:
        while not proxy._stopped.wait(1.0):
            pass
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
