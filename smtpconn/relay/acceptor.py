"""One inbound accept queue shared by several relay processes (``[relay] processes > 1``).

The main binds the inbound listening socket(s) itself (:func:`bind_shared`, no ``SO_REUSEPORT``)
and hands the descriptors to its shard children. Every process accepts from the same queue with
its own :class:`SharedListener`: one connection per readiness callback, so the process whose loop
turns faster (the less busy one) takes more of them. ``SO_REUSEPORT`` instead spread connections
by a hash of the addresses, whatever each process's load, and one process could fill up while
the other had room.

Who wakes first is not who is least busy: a burst of connections (20 senders starting at once)
lands mostly on the process whose loop happens to be idle at that instant, before the TLS
handshakes and logins make it busy. So the processes also publish how many sessions each holds
in a shared memory page (:class:`SessionBoard`, a memfd the main passes with the sockets), and a
process that holds more than another leaves the connection for the others: it looks at the board
again every :data:`DEFER_CHECK` seconds, and takes the connection as soon as no other process
holds fewer sessions, or after :data:`DEFER` anyway (a child that died or hangs must not strand
it).

Capacity (:class:`AcceptGate`): a process stops reading the socket once it holds its share of
``max_sessions`` (counting connections still being set up) and reads again when a session ends,
so the others take the next connections. The main (``overflow``) instead waits
:data:`OVERFLOW_DELAY` and then takes what is still waiting: every process is full, and the
tracker answers ``421 4.3.2`` rather than leave the client in the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from smtpconn.relay.log import log_event

# Connections the kernel queues for us before it refuses (or drops) new ones. One queue serves
# all processes now, so it is longer than asyncio's 100.
BACKLOG = 511
# Seconds the main leaves a connection in the queue while it is full itself, for a process with
# room to take it; after that it takes it and answers 421.
OVERFLOW_DELAY = 0.2
# Connections the main refuses at once when every process is full.
OVERFLOW_BATCH = 64
# Seconds a process that holds more sessions than another leaves a waiting connection to it at
# most, and how often it looks at the board meanwhile. Without the looks, a deferral ran its
# whole 20 ms even when the other process had meanwhile become the busier one and deferred in
# turn: with many short sessions (20 senders, one message each) connections waited in the queue
# while both processes held back, and the relay's rate halved.
DEFER = 0.02
DEFER_CHECK = 0.002
# Seconds a listener stops accepting when the process is out of file descriptors.
NO_FILES_PAUSE = 0.5
# Seconds to wait for a port still held by a stopping process (a shard child of a main that was
# killed closes its copy of the socket as soon as it sees the main gone).
BIND_RETRY = 5.0

_NO_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Capacity(Protocol):
    """What a gate reads: the sessions a process holds and how many it may (RelayLimits)."""

    sessions: int
    max_sessions: int


_SLOT = struct.Struct("q")
# A slot nobody holds: a child not started yet, or one that exited. Never "the least loaded":
# a dead child's last count (0 for one that crash-loops) must not make the others defer to it.
ABSENT = -1


class SessionBoard:
    """The sessions each relay process holds (slot K: shard K, the main is 0), in one shared
    memory page every process maps. Each writes only its own slot; reading another's is
    advisory: a slot whose child exited is ABSENT, never the least loaded."""

    def __init__(self, fd: int, slots: int, index: int) -> None:
        self.fd = fd
        self.slots = slots
        self.index = index
        self._map = mmap.mmap(fd, slots * _SLOT.size)

    @classmethod
    def create(cls, slots: int) -> SessionBoard:
        fd = os.memfd_create("smtpconn-sessions")
        os.ftruncate(fd, slots * _SLOT.size)
        board = cls(fd, slots, 0)
        for index in range(1, slots):
            board.forget(index)
        return board

    @classmethod
    def join(cls, fd: int, index: int) -> SessionBoard | None:
        """A child's view of the main's board: its size says how many processes the main runs
        (a child restarted after ``processes`` was edited reads another number from the
        profile); None when this child has no slot on it."""
        slots = os.fstat(fd).st_size // _SLOT.size
        return cls(fd, slots, index) if 0 < index < slots else None

    def forget(self, index: int) -> None:
        """Slot ``index`` is nobody's now (its child exited): the main says so."""
        if 0 <= index < self.slots and index != self.index:
            _SLOT.pack_into(self._map, index * _SLOT.size, ABSENT)

    def publish(self, sessions: int) -> None:
        _SLOT.pack_into(self._map, self.index * _SLOT.size, sessions)

    def least_loaded(self, sessions: int) -> bool:
        """Whether no other process holds fewer sessions than ``sessions``."""
        for k in range(self.slots):
            other = _SLOT.unpack_from(self._map, k * _SLOT.size)[0]
            if k != self.index and other != ABSENT and other < sessions:
                return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError, BufferError):
            self._map.close()
            os.close(self.fd)


class AcceptGate:
    """Whether this process should take one more connection; the listeners it opens and shuts.
    ``overflow``: keep taking connections when full (the main: the tracker refuses them).
    ``board``: where the processes see each other's sessions (None: take whatever comes)."""

    def __init__(
        self, limits: Capacity, *, overflow: bool, board: SessionBoard | None = None
    ) -> None:
        self.limits = limits
        self.overflow = overflow
        self.board = board
        self.pending = 0  # accepted, session not started yet (setup)
        # accepted on the implicit-TLS port, handshake under way: weighed when the processes
        # share connections out, never counted as full (as with one process, a silent client
        # holds no session until its handshake ends: it cannot shut a child's listener)
        self.handshakes = 0
        self.listeners: list[SharedListener] = []
        self.publish()

    def load(self) -> int:
        return self.limits.sessions + self.pending + self.handshakes

    def full(self) -> bool:
        return self.limits.sessions + self.pending >= self.limits.max_sessions

    def preferred(self) -> bool:
        """Whether this process should take the next connection now (no other holds fewer)."""
        return self.board is None or self.board.least_loaded(self.load())

    def publish(self) -> None:
        if self.board is not None:
            self.board.publish(self.load())

    def changed(self) -> None:
        """A session ended or a connection's setup finished: open or shut the listeners."""
        self.publish()
        for listener in self.listeners:
            listener.update()


async def bind_shared(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on ``host:port`` (every address the name has; port 0: one free port for
    all), to be shared with the shard children. Retries a port in use for BIND_RETRY seconds."""
    deadline = time.monotonic() + BIND_RETRY
    while True:
        try:
            return await _bind(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0 or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.1)


async def _bind(host: str, port: int) -> list[socket.socket]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def adopt(fds: Sequence[int]) -> list[socket.socket]:
    """The listening sockets the main passed to this child, by descriptor."""
    sockets = [socket.socket(fileno=fd) for fd in fds]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


class SharedListener:
    """Accepts from listening sockets shared with other processes; offers what the relay uses
    of an :class:`asyncio.Server` (``sockets``, ``close``, ``wait_closed``, ``is_serving``)."""

    def __init__(
        self,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        gate: AcceptGate,
        *,
        name: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sockets = sockets
        self.name = name
        self._factory = factory
        self._gate = gate
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""  # what the timer ends: "defer", "overflow" or "pause"
        self._defer_until = 0.0  # loop time at which a deferred connection is taken anyway
        self._warned = False  # out of file descriptors, said once until an accept works again
        self._tasks: set[asyncio.Task[None]] = set()
        gate.listeners.append(self)
        self.update()

    # -- what the relay uses of a Server --------------------------------------------------

    def is_serving(self) -> bool:
        return not self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pause()
        self._cancel_timer()
        with contextlib.suppress(ValueError):
            self._gate.listeners.remove(self)
        for sock in self.sockets:
            sock.close()
        for task in self._tasks:  # connections still in their TLS handshake
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading ---------------------------------------------------------------------------

    def update(self) -> None:
        """Read the sockets while the process has room; when full, stop (a child) or let the
        overflow timer decide (the main)."""
        if self._closed:
            return
        if not self._gate.full():
            if self._timer is not None and self._timer_kind != "overflow":
                # A deferral runs to its end (re-arming it at every session end could keep a
                # busy process from ever taking one) and a pause for descriptors to its end.
                return
            self._cancel_timer()
            self._resume()
        elif not self._gate.overflow:
            self._pause()
        elif self._timer is None:
            self._resume()  # the next connection starts the overflow timer

    def _resume(self) -> None:
        if not self._reading:
            self._reading = True
            for sock in self.sockets:
                self._loop.add_reader(sock, self._ready, sock)

    def _pause(self) -> None:
        if self._reading:
            self._reading = False
            for sock in self.sockets:
                self._loop.remove_reader(sock)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait(self, delay: float, then: Callable[[], None], kind: str) -> None:
        self._pause()
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, then)
        self._timer_kind = kind

    def _ready(self, sock: socket.socket) -> None:
        # One connection per callback, and only while no other process holds fewer sessions
        # (else after DEFER, if it still waits): the split follows the sessions each holds.
        if not self._gate.full():
            if self._gate.preferred():
                self._accept(sock)
            else:
                self._defer_until = self._loop.time() + DEFER
                self._wait(DEFER_CHECK, self._deferred, "defer")
        elif self._gate.overflow:
            self._wait(OVERFLOW_DELAY, self._overflow, "overflow")
        else:
            self._pause()

    def _deferred(self) -> None:
        """A look at the board while a connection waits for a less busy process: take one once
        no other process holds fewer sessions, or once DEFER has passed (the other did not)."""
        self._timer = None
        if self._closed:
            return
        if not self._gate.full():
            if not self._gate.preferred() and self._loop.time() < self._defer_until:
                self._timer = self._loop.call_later(DEFER_CHECK, self._deferred)
                return
            for sock in self.sockets:
                if self._accept(sock):
                    break
        self.update()

    def _overflow(self) -> None:
        """Every process was full for OVERFLOW_DELAY: take what waits (the tracker answers 421)."""
        self._timer = None
        if self._closed:
            return
        if self._gate.full():
            for sock in self.sockets:
                for _ in range(OVERFLOW_BATCH):
                    if not self._accept(sock):
                        break
        self.update()

    def _accept(self, sock: socket.socket) -> bool:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return False  # another process took it
        except OSError as exc:
            if exc.errno in _NO_FILES:
                if not self._warned:
                    self._warned = True
                    log_event(
                        "relay.accept-paused",
                        logging.WARNING,
                        listener=self.name,
                        error=exc.strerror,
                    )
                self._wait(NO_FILES_PAUSE, self._after_pause, "pause")
            return False  # ECONNABORTED and the like: that client is gone
        self._warned = False
        conn.setblocking(False)
        if self._tls is None:
            self._gate.pending += 1
        else:
            self._gate.handshakes += 1
        self._gate.publish()
        task = self._loop.create_task(self._start_session(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _after_pause(self) -> None:
        self._timer = None
        self.update()

    async def _start_session(self, conn: socket.socket) -> None:
        try:
            if self._tls is None:
                await self._loop.connect_accepted_socket(self._factory, conn)
            else:
                await self._loop.connect_accepted_socket(
                    self._factory, conn, ssl=self._tls, ssl_handshake_timeout=60.0
                )
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            # a client that left or failed its TLS handshake: nothing to tell it
            log_event(
                "session.setup-failed", logging.DEBUG, listener=self.name, error=type(exc).__name__
            )
            conn.close()
        except asyncio.CancelledError:  # the listener closed during the handshake
            conn.close()
            raise
        finally:
            if self._tls is None:
                self._gate.pending -= 1
            else:
                self._gate.handshakes -= 1
            self._gate.changed()
