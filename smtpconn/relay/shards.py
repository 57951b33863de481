"""Sharded inbound (``[relay] processes = N``): N processes accept inbound mail.

The main process is the relay as with one process (both listeners, submission, outbound, its
inbound queue over ``spool/``, the status file, lanes, metrics, the pid file). It also starts
N - 1 *shard children*: ``python -m smtpconn relay`` run again with the same arguments (so the
same profile and overrides) and ``SMTPCONN_SHARD=K`` in the environment. A child serves only the
inbound listener(s), on the listening sockets the main bound and passed it (one accept queue
for all processes, see acceptor.py: the process with room and time takes the next connection),
and hands what it accepted to the sink from its own spool
shard ``spool/shards/<K>/``: a normal spool with its own lock, slots and start-up recovery, so
``250`` still comes only after fsync. Inbound mail never enters the outbound queue, so a child
never needs the main's spool.

A child writes each of its log events as one JSON line to its stdout (a pipe to the main), which
feeds them to its own observers (status file, metrics); the child's log line itself goes to the
shared stderr. The child watches its stdin (a pipe from the main): end of file — the main
stopped, even by SIGKILL — makes it stop cleanly. The main sends SIGTERM and SIGHUP on to its
children and starts again one that exited unexpectedly. A shard folder left by a larger N is
emptied by a child in drain mode (no listener; it exits once its spool is empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpconn.errors import UsageError
from smtpconn.relay.log import OBSERVERS, log_event
from smtpconn.relay.spool import DIRECTIONS, Spool, SpoolEntry

SHARDS_DIR = "shards"
ENV_SHARD = "SMTPCONN_SHARD"  # the child's shard number (1 ..)
# The listening sockets the main passed: "<inbound fds>,<inbound-tls fds or ->", fds joined by "+"
ENV_FDS = "SMTPCONN_SHARD_FDS"
ENV_BOARD = "SMTPCONN_SHARD_BOARD"  # the fd of the processes' session board (acceptor.py)
ENV_PARENT = "SMTPCONN_SHARD_PARENT"  # the main's pid: a child checks it is its parent
ENV_DRAIN = "SMTPCONN_SHARD_DRAIN"  # "1": no listener, exit once the shard is empty
# Back-off before a child that exited is started again: doubling up to the cap; a child that ran
# this long before exiting starts again after the first step.
RESTART_FIRST = 0.5
RESTART_CAP = 10.0
RESTART_RESET_AFTER = 30.0
LOCK_RETRY = 0.2
# Quick exits in a row after which a child is reported as failing (level error).
FAILING_AFTER = 3
# How often the main looks for a shard beyond N that received mail after it started.
LEFT_OVER_SCAN = 5.0


@dataclass(frozen=True, slots=True)
class ShardRole:
    """What a shard child is: its number, the inbound listening sockets the main passed it (by
    descriptor), and whether it only drains."""

    index: int
    inbound_fds: tuple[int, ...] = ()
    inbound_tls_fds: tuple[int, ...] | None = None
    drain: bool = False
    board_fd: int | None = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        board = () if self.board_fd is None else (self.board_fd,)
        return self.inbound_fds + (self.inbound_tls_fds or ()) + board


def _fds(text: str) -> tuple[int, ...]:
    return tuple(int(fd) for fd in text.split("+") if fd.isdigit())


def _fds_text(fds: tuple[int, ...]) -> str:
    return "+".join(map(str, fds))


def shard_role_from_env(
    environ: Mapping[str, str], parent_pid: int | None = None
) -> ShardRole | None:
    """The role the main gave this process, or None (this is the main, or the only process).
    Only a main sets it, for its own children: ``SMTPCONN_SHARD`` set by anything else (a
    left-over export, a service file) is refused with a clear error, never obeyed."""
    text = environ.get(ENV_SHARD)
    if not text:
        return None
    parent = os.getppid() if parent_pid is None else parent_pid
    if not text.isdigit() or int(text) < 1 or environ.get(ENV_PARENT) != str(parent):
        raise UsageError(
            f"{ENV_SHARD} is set ({text[:20]!r}): it is how a relay tells its own shard "
            "children what they are, and this process was not started by a relay",
            fix=f"unset {ENV_SHARD} (and the other {ENV_SHARD}_* variables) and start the relay "
            "again; [relay] processes starts the children",
            input="environment",
        )
    inbound, _, tls = environ.get(ENV_FDS, ",-").partition(",")
    return ShardRole(
        index=int(text),
        inbound_fds=_fds(inbound),
        inbound_tls_fds=None if tls in ("", "-") else _fds(tls),
        drain=environ.get(ENV_DRAIN) == "1",
        board_fd=int(board) if (board := environ.get(ENV_BOARD, "")).isdigit() else None,
    )


def forget_shard_env(environ: MutableMapping[str, str]) -> None:
    """Drop the role's variables once read: what a child runs (a pipe sink's command) must not
    inherit them."""
    for name in [k for k in environ if k == ENV_SHARD or k.startswith(ENV_SHARD + "_")]:
        del environ[name]


def shard_env(role: ShardRole) -> dict[str, str]:
    tls = "-" if role.inbound_tls_fds is None else _fds_text(role.inbound_tls_fds)
    return {
        ENV_SHARD: str(role.index),
        ENV_PARENT: str(os.getpid()),
        ENV_FDS: f"{_fds_text(role.inbound_fds)},{tls}",
        ENV_DRAIN: "1" if role.drain else "0",
        ENV_BOARD: "" if role.board_fd is None else str(role.board_fd),
    }


# -- the spool's shards ----------------------------------------------------------------------


def shard_dir(spool_dir: Path, index: int) -> Path:
    return spool_dir / SHARDS_DIR / str(index)


def shard_dirs(spool_dir: Path) -> list[tuple[int, Path]]:
    """The shard folders under ``spool_dir`` (whatever N made them), by number."""
    try:
        with os.scandir(spool_dir / SHARDS_DIR) as it:
            found = [(int(e.name), Path(e.path)) for e in it if e.name.isdigit() and e.is_dir()]
    except OSError:
        return []
    return sorted(found)


def spool_family(spool: Spool) -> list[Spool]:
    """``spool`` and a :class:`Spool` on each of its shards: where ``queue`` and ``status`` look
    for messages. (A shard's spool opened here is not locked: reading and the ``queue``
    operations work beside the child that holds it, as beside the main.)"""
    return [spool, *(Spool(path) for _, path in shard_dirs(spool.directory))]


def find_anywhere(spool: Spool, entry_id: str) -> SpoolEntry | None:
    """The entry ``entry_id`` in ``spool`` or in one of its shards (a child's message, for an
    event whose acceptance the main did not see: the child was started again since)."""
    entry = spool.find(entry_id)
    if entry is None and entry_id:
        for _, path in shard_dirs(spool.directory):
            entry = Spool(path).find(entry_id)
            if entry is not None:
                break
    return entry


def holds_mail(directory: Path) -> bool:
    """Whether a shard folder still has a message (queued, or whole in a slot after a kill)."""
    spool = Spool(directory)
    return any(spool.ids(d) or next(spool.stranded(d), None) for d in DIRECTIONS)


# -- events: child -> main -------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def encode_event(event: str, fields: Mapping[str, Any]) -> bytes:
    """One event as the JSON line a child writes to the main (ASCII: no raw control character)."""
    document = {"event": event, "fields": {str(k): _json_safe(v) for k, v in fields.items()}}
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def decode_event(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """The (event, fields) of a child's line, or None for anything else (never raises)."""
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    event, fields = document.get("event"), document.get("fields")
    if not isinstance(event, str) or not isinstance(fields, dict):
        return None
    return event, fields


class EventPipe:
    """A child's observer: its events to the main over stdout, never blocking the child (the
    transport buffers; counting is advisory, the message is already on disk)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport) -> None:
        self._loop = loop
        self._transport = transport
        self._thread = threading.get_ident()

    @classmethod
    async def open(cls, fd: int = 1) -> EventPipe:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(os.dup(fd), "wb", buffering=0)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
        return cls(loop, transport)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        line = encode_event(event, fields)
        if threading.get_ident() == self._thread:
            self._write(line)
        else:  # an event logged from a worker thread
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._write, line)

    def _write(self, line: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(line)

    def close(self) -> None:
        self._transport.close()


async def parent_gone(fd: int = 0) -> None:
    """Returns when the main's end of our stdin closes (it stopped or was killed)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    class _Watch(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass  # the main writes nothing; it only keeps the pipe open

        def eof_received(self) -> bool | None:
            if not done.done():
                done.set_result(None)
            return None

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_result(None)

    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(_Watch, pipe)
    try:
        await done
    finally:
        transport.close()


def emit_to_observers(event: str, fields: dict[str, Any]) -> None:
    """A child's event, counted by this process's observers as if it had happened here (the
    child already logged its own line)."""
    for observer in list(OBSERVERS):
        try:
            observer(event, fields)
        except Exception as exc:  # counting must never stop the main
            log_event("relay.observer-failed", logging.ERROR, error=repr(exc))


# -- the main's side ---------------------------------------------------------------------------


def child_command() -> list[str]:
    """This process's command line, run again as a shard child (same options, same profile)."""
    return [sys.executable, "-m", "smtpconn", *sys.argv[1:]]


class ShardSupervisor:
    """Starts, watches and stops the main's shard children (exactly the pids it started)."""

    def __init__(
        self,
        command: Sequence[str],
        spool_dir: Path,
        processes: int,
        fds: tuple[tuple[int, ...], tuple[int, ...] | None],
        *,
        board_fd: int | None = None,
        child_gone: Callable[[int], None] | None = None,
        on_event: Callable[[str, dict[str, Any]], None] = emit_to_observers,
    ) -> None:
        self.command = list(command)
        self.spool_dir = spool_dir
        self.processes = processes
        self.fds = fds  # the inbound listening sockets, kept open by the main for restarts
        self.board_fd = board_fd
        # Told the shard whose child exited: its slot on the session board is nobody's now.
        self.child_gone = child_gone
        self.on_event = on_event
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ready: dict[int, asyncio.Event] = {}  # serving shards: set once each listens
        self._listening: set[int] = set()  # shards whose current child said it is ready
        self._reload_due: set[int] = set()  # a reload came while the child was starting
        self._kept: set[int] = set()  # shards with a child kept running (serving or draining)

    def roles(self) -> list[ShardRole]:
        """One serving child per shard 1 .. N-1, and a draining one for each shard beyond that
        still holding mail (N was lowered)."""
        inbound, tls = self.fds
        roles = [
            ShardRole(k, inbound, tls, board_fd=self.board_fd) for k in range(1, self.processes)
        ]
        roles += [
            ShardRole(k, drain=True)
            for k, path in shard_dirs(self.spool_dir)
            if k >= self.processes and holds_mail(path)
        ]
        return roles

    def start(self) -> None:
        for role in self.roles():
            if not role.drain:
                self._ready[role.index] = asyncio.Event()
            self._keep_running(role)
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch_left_over()))

    def _keep_running(self, role: ShardRole) -> None:
        self._kept.add(role.index)
        self._tasks.append(asyncio.get_running_loop().create_task(self._keep(role)))

    async def _watch_left_over(self, every: float = LEFT_OVER_SCAN) -> None:
        """A shard beyond N can receive mail after the main started: the child of a killed main
        (with a larger N) finishing its sessions. Look again now and then, and drain it."""
        while not self._stopping:
            await asyncio.sleep(every)
            found = await asyncio.to_thread(self.roles)
            for role in found:
                if role.drain and role.index not in self._kept and not self._stopping:
                    self._keep_running(role)

    async def ready(self, timeout: float) -> list[int]:
        """Wait until every serving child listens (at most ``timeout`` seconds: the main
        serves meanwhile); the shards still not listening."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for event in self._ready.values():
                    await event.wait()
        return [index for index, event in self._ready.items() if not event.is_set()]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.children.values() if p.returncode is None]

    async def _keep(self, role: ShardRole) -> None:
        """Run one child; start it again (after a back-off) whenever it exits unexpectedly."""
        delay = RESTART_FIRST
        failures = 0  # in a row, each soon after its start
        try:
            while not self._stopping:
                started = time.monotonic()
                code = await self._run_once(role)
                if self._stopping or (role.drain and code == 0):
                    return
                ran = time.monotonic() - started
                quick = ran < RESTART_RESET_AFTER
                failures = failures + 1 if quick else 0
                delay = min(delay * 2, RESTART_CAP) if quick else RESTART_FIRST
                # A child that keeps failing (a profile edit in progress, a full disk) leaves
                # the main serving alone with its share of the limits: an error, not a warning.
                failing = failures >= FAILING_AFTER
                log_event(
                    "relay.shard-failing" if failing else "relay.shard-exited",
                    logging.ERROR if failing else logging.WARNING,
                    shard=role.index,
                    code=code,
                    restart_in=delay,
                    failures=failures if failing else None,
                )
                await asyncio.sleep(delay)
        finally:
            self._kept.discard(role.index)

    async def _run_once(self, role: ShardRole) -> int | None:
        try:
            child = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, **shard_env(role)},
                pass_fds=role.pass_fds,
            )
        except OSError as exc:
            log_event("relay.shard-failed", logging.ERROR, shard=role.index, error=exc.strerror)
            return None
        self.children[role.index] = child
        self._listening.discard(role.index)
        if self._stopping:  # stop() began while it started
            child.send_signal(signal.SIGTERM)
        log_event("relay.shard-started", shard=role.index, pid=child.pid, drain=role.drain)
        try:
            assert child.stdout is not None
            await self._read_events(child.stdout, role.index)
            return await child.wait()
        finally:
            if self.children.get(role.index) is child:
                del self.children[role.index]
            if self.child_gone is not None and not role.drain:
                self.child_gone(role.index)

    async def _read_events(self, stream: asyncio.StreamReader, index: int) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line beyond the reader's limit: not one of ours
                continue
            if not line:
                return
            decoded = decode_event(line)
            if decoded is None:
                continue
            if decoded[0] == "relay.shard-ready":
                self._became_ready(index)
            self.on_event(*decoded)

    def hold(self) -> None:
        """Start no child from now on (the main is stopping and closes the sockets they get)."""
        self._stopping = True

    def _became_ready(self, index: int) -> None:
        if index in self._ready:
            self._ready[index].set()
        self._listening.add(index)
        if index in self._reload_due:  # it may have read the profile before the change
            self._reload_due.discard(index)
            self._send(index, signal.SIGHUP)

    def reload(self) -> None:
        """SIGHUP to every child, so each re-reads the profile. A child still starting has no
        handler yet (SIGHUP would kill it): it gets the signal once it says it is ready."""
        for index in list(self.children):
            if index in self._listening:
                self._send(index, signal.SIGHUP)
            else:
                self._reload_due.add(index)

    def _send(self, index: int, signum: int) -> None:
        child = self.children.get(index)
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every child that runs."""
        for index in list(self.children):
            self._send(index, signum)

    async def stop(self, grace: float) -> None:
        """SIGTERM to every child; wait for them (their own shutdown grace, and a little), then
        SIGKILL whichever is still there."""
        self._stopping = True
        self.signal(signal.SIGTERM)
        running = [c for c in self.children.values() if c.returncode is None]
        if running:
            waits = [asyncio.ensure_future(c.wait()) for c in running]
            _, late = await asyncio.wait(waits, timeout=grace + 5)
            if late:
                self.signal(signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for child in running:
            with contextlib.suppress(ProcessLookupError, asyncio.TimeoutError):
                await asyncio.wait_for(child.wait(), 5)
