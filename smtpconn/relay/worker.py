"""The loop that works through one spool direction: launches due messages oldest-due first, runs
a bounded number of deliveries at once, sleeps until the next retry is due or new work arrives.

The worker keeps what it knows about its queue in memory (a heap of due times) instead of
reading the spool directory on every wake-up: re-reading every message's header and retry state
to launch a handful of deliveries made a backlog of n messages cost O(n²) file reads (measured in
``benchmarks/README.md``). The memory is fed by:

* the listeners, which hand over every message they spooled (:meth:`QueueWorker.add`);
* the delivery itself, which returns the message's retry state after each attempt (or the
  worker re-reads it: one small file, only while the message is still spooled);
* a scan of the directory at start-up (messages left by an earlier run), when ``smtpconn queue
  retry/delete`` replaced the spool's ``.kick`` marker (checked every ``poll`` seconds, a single
  ``stat``), and on a slow timer (``rescan`` seconds) for anything else changed on disk.

The disk stays the truth: a message is only forgotten after its file is gone, and a restart
rebuilds everything from the directory. What a delivery *means* (sink hand-over, SMTP to the
customer's server, bounce) is the ``process`` callable's business; it records the outcome in
the spool itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from smtpconn.relay.lanes import Lane, Lanes
from smtpconn.relay.log import log_event
from smtpconn.relay.spool import RetryState, Spool, SpoolEntry


@dataclass(frozen=True, slots=True)
class Attempted:
    """What a ``process`` callable may return, so the worker need not read the disk again:
    the message's retry state after the attempt, or None once it left the spool."""

    state: RetryState | None


# Returning None means "look at the spool" (the worker then reads the state file itself).
Process = Callable[[SpoolEntry], Awaitable[Attempted | None]]

DEFAULT_RESCAN = 60.0  # seconds between full re-reads of the spool, for changes nobody announced


@dataclass(slots=True)
class _Tracked:
    entry: SpoolEntry
    due: float  # epoch seconds; the heap key
    held: bool = False
    pending: int = 0  # recipients not yet delivered (its lane reserves its next transaction)
    version: int = 0  # bumped on every update, so a scan that raced with one does not undo it


@dataclass(slots=True)
class _Scan:
    new: list[tuple[SpoolEntry, RetryState]] = field(default_factory=list)
    refreshed: dict[str, tuple[int, RetryState]] = field(default_factory=dict)
    gone: list[tuple[str, int]] = field(default_factory=list)


def _due_time(entry: SpoolEntry, state: RetryState) -> float:
    # Never-tried messages queue by arrival, retried ones by when they became due: one order.
    return state.next_attempt or entry.envelope.received_at


class QueueWorker:
    def __init__(
        self,
        spool: Spool,
        direction: str,
        process: Process,
        *,
        concurrency: int = 4,
        poll: float = 1.0,
        rescan: float = DEFAULT_RESCAN,
        lanes: Lanes | None = None,
    ) -> None:
        self.spool = spool
        self.direction = direction
        self.process = process
        self.concurrency = concurrency
        self.poll = poll
        self.rescan = rescan
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._known: dict[str, _Tracked] = {}
        self._heap: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._scan_wanted = True  # the start-up scan
        self._marker: tuple[int, int] | None = None
        self._next_rescan = 0.0
        # With lanes (outbound), a due message waits in its server's lane until the lane may
        # start it; ``concurrency`` then caps all lanes together.
        self.lanes = lanes
        self._ready: dict[str, deque[str]] = {}
        self._readied: set[str] = set()
        self._running_in: dict[str, Lane] = {}

    def start(self) -> None:
        self._marker = self.spool.kicked_marker()
        self._task = asyncio.create_task(self._run(), name=f"spool-{self.direction}")

    def add(self, entries: Iterable[SpoolEntry]) -> None:
        """Messages just spooled (on the event loop's thread): due now."""
        for entry in entries:
            if entry.id not in self._known:
                self._track(entry, RetryState())
        self._wake.set()

    def wake(self) -> None:
        """Something changed on disk that was not handed over: look at the directory again."""
        self._scan_wanted = True
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """Messages the worker knows are spooled (due, deferred, held or in flight)."""
        return len(self._known)

    # -- bookkeeping (event loop thread only) -------------------------------------------------

    def _track(self, entry: SpoolEntry, state: RetryState, *, attempted: bool = False) -> None:
        item = self._known.get(entry.id)
        due, held = _due_time(entry, state), state.held
        # A rescan re-reads unchanged states every minute: pushing them again would pile up
        # duplicate heap entries for a long-deferred backlog. After an attempt the entry left
        # the heap, so it always goes back.
        changed = item is None or attempted or item.due != due or item.held != held
        if item is None:
            item = self._known[entry.id] = _Tracked(entry, due)
        item.due, item.held = due, held
        item.pending = max(1, len(entry.envelope.rcpts) - len(state.done))
        item.version += 1
        if changed and not held:
            heapq.heappush(self._heap, (due, entry.id))

    def _launch_due(self) -> float | None:
        """Start due deliveries while slots are free; the time the next one is due, if any."""
        now = time.time()
        while self._heap and len(self._in_flight) < self.concurrency and not self._stopping:
            due, entry_id = self._heap[0]
            item = self._known.get(entry_id)
            if item is None or item.held or item.due != due or entry_id in self._in_flight:
                heapq.heappop(self._heap)  # stale: the message changed since it was pushed
                continue
            if due > now:
                return due if self.lanes is None else self._launch_lanes(now, due)
            heapq.heappop(self._heap)
            if self.lanes is not None:
                self._to_lane(item)
                continue
            self._launch(item, None)
        return None if self.lanes is None else self._launch_lanes(now, math.inf)

    def _launch(self, item: _Tracked, lane: Lane | None) -> None:
        entry_id = item.entry.id
        if lane is not None:
            lane.started(time.time(), entry_id, lane.transaction_size(item.pending))
            self._running_in[entry_id] = lane
        self._in_flight[entry_id] = asyncio.create_task(
            self._one(item.entry), name=f"deliver-{entry_id}"
        )

    def _to_lane(self, item: _Tracked) -> None:
        assert self.lanes is not None
        if item.entry.id not in self._readied:
            self._readied.add(item.entry.id)
            self._ready.setdefault(self.lanes.key_of(item.entry), deque()).append(item.entry.id)

    def _launch_lanes(self, now: float, next_due: float) -> float | None:
        """Start what each lane allows, oldest first within a lane; a throttled or full lane
        waits without holding up the others. The earliest time a waiting lane may start."""
        assert self.lanes is not None
        wake = next_due
        for key, ready in list(self._ready.items()):
            lane = self.lanes.lane(key)
            while ready and len(self._in_flight) < self.concurrency and not self._stopping:
                item = self._known.get(ready[0])
                if item is None or item.held or item.entry.id in self._in_flight:
                    self._readied.discard(ready.popleft())  # deleted, held or started meanwhile
                    continue
                wait = lane.wait(now, lane.transaction_size(item.pending))
                if wait > 0:
                    wake = min(wake, now + wait)  # inf while full: a finishing delivery wakes us
                    break
                self._readied.discard(ready.popleft())
                self._launch(item, lane)
            if not ready:
                del self._ready[key]
        return None if math.isinf(wake) else wake

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        next_check = time.monotonic() + self.poll
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.poll
                marker = self.spool.kicked_marker()
                if marker != self._marker or now >= self._next_rescan:
                    self._marker = marker
                    self._scan_wanted = True
            if self._scan_wanted:
                self._scan_wanted = False
                await self._scan()
                continue  # new work may have arrived while scanning
            next_due = self._launch_due()
            delay = next_check - time.monotonic()
            if next_due is not None:
                delay = min(delay, next_due - time.time())
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _scan(self) -> None:
        self._next_rescan = time.monotonic() + self.rescan
        now = time.time()
        # Re-read only what waits on the disk's say-so (deferred or held): a due message is
        # launched soon anyway and its state is read by the delivery itself.
        snapshot = {i: t.version for i, t in self._known.items() if i not in self._in_flight}
        waiting = {
            i: (t.version, t.entry)
            for i, t in self._known.items()
            if i in snapshot and (t.held or t.due > now)
        }
        scan = await asyncio.to_thread(self._read_directory, snapshot, waiting)
        for entry_id, version in scan.gone:
            item = self._known.get(entry_id)
            if item is not None and item.version == version and entry_id not in self._in_flight:
                del self._known[entry_id]
        for entry, state in scan.new:
            if entry.id not in self._known:
                self._track(entry, state)
        for entry_id, (version, state) in scan.refreshed.items():
            item = self._known.get(entry_id)
            if item is not None and item.version == version and entry_id not in self._in_flight:
                self._track(item.entry, state)

    def _read_directory(
        self, known: dict[str, int], waiting: dict[str, tuple[int, SpoolEntry]]
    ) -> _Scan:
        """Runs in a thread: only reads the disk, the loop applies the result."""
        scan = _Scan()
        on_disk = set(self.spool.ids(self.direction))
        directory = self.spool.directory / self.direction
        for entry_id in sorted(on_disk - known.keys()):
            entry = self.spool.read_entry(directory / f"{entry_id}.msg", self.direction)
            if entry is not None:
                scan.new.append((entry, self.spool.state(entry)))
        for entry_id, (version, entry) in waiting.items():
            if entry_id in on_disk:
                scan.refreshed[entry_id] = (version, self.spool.state(entry))
        # A message added after the listing was taken is not in `known`, so never "gone" here.
        scan.gone = [(i, known[i]) for i in known.keys() - on_disk]
        return scan

    async def _one(self, entry: SpoolEntry) -> None:
        failed = False
        outcome: Attempted | None = None
        try:
            outcome = await self.process(entry)
        except asyncio.CancelledError:
            self._in_flight.pop(entry.id, None)
            lane = self._running_in.pop(entry.id, None)
            if lane is not None:
                lane.finished(entry.id)
            raise
        except Exception as exc:  # a bug must not kill the worker; the message stays spooled
            failed = True
            if entry.path.exists():
                log_event(
                    "worker.error",
                    logging.ERROR,
                    direction=self.direction,
                    id=entry.id,
                    error=repr(exc),
                )
        try:
            state = outcome.state if outcome else await asyncio.to_thread(self._after, entry)
        finally:
            self._in_flight.pop(entry.id, None)
            lane = self._running_in.pop(entry.id, None)
            if lane is not None:
                lane.finished(entry.id)
            self._wake.set()
        if state is None:
            self._known.pop(entry.id, None)
            return
        if failed and state.next_attempt <= time.time():
            # Do not spin on a message that crashes its delivery: try it again after a poll.
            state.next_attempt = time.time() + self.poll
        if entry.id in self._known:
            self._track(entry, state, attempted=True)

    def _after(self, entry: SpoolEntry) -> RetryState | None:
        """The message's state after an attempt; None once it left the spool."""
        if not entry.path.exists():
            return None
        return self.spool.state(entry)

    async def stop(self, grace: float) -> None:
        """Stop picking new work; let deliveries at hand finish for up to ``grace`` seconds."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = list(self._in_flight.values())
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()  # the message stays in the spool: delivered again after restart
            if still:
                await asyncio.wait(still)
