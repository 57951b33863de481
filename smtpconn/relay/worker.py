"""The loop that works through one spool direction: picks due messages in arrival order, runs
a bounded number of deliveries at once, sleeps until the next retry is due or a new message
arrives (or, at most, ``poll`` seconds, which also notices ``smtpconn queue retry``).

What a delivery *means* (sink hand-over, SMTP to the customer's server, bounce) is the
``process`` callable's business; it records the outcome in the spool itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from smtpconn.relay.log import log_event
from smtpconn.relay.spool import Spool, SpoolEntry

Process = Callable[[SpoolEntry], Awaitable[None]]


class QueueWorker:
    def __init__(
        self,
        spool: Spool,
        direction: str,
        process: Process,
        *,
        concurrency: int = 4,
        poll: float = 1.0,
    ) -> None:
        self.spool = spool
        self.direction = direction
        self.process = process
        self.concurrency = concurrency
        self.poll = poll
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"spool-{self.direction}")

    def wake(self) -> None:
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            next_due = await asyncio.to_thread(self._schedule_due)
            delay = (
                self.poll if next_due is None else max(0.0, min(self.poll, next_due - time.time()))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _due(self) -> tuple[list[SpoolEntry], float | None]:
        now = time.time()
        due: list[SpoolEntry] = []
        next_due: float | None = None
        free = self.concurrency - len(self._in_flight)
        for entry in self.spool.entries(self.direction):
            if entry.id in self._in_flight:
                continue
            state = self.spool.state(entry)
            if state.held:
                continue
            if state.next_attempt <= now:
                if len(due) < free:
                    due.append(entry)
            elif next_due is None or state.next_attempt < next_due:
                next_due = state.next_attempt
        return due, next_due

    def _schedule_due(self) -> float | None:
        # Runs in a thread for the directory scan; tasks are created back on the loop.
        due, next_due = self._due()
        if due:
            self._loop.call_soon_threadsafe(self._launch, due)
        return next_due

    def _launch(self, entries: list[SpoolEntry]) -> None:
        for entry in entries:
            if entry.id in self._in_flight or self._stopping:
                continue
            task = asyncio.create_task(self._one(entry), name=f"deliver-{entry.id}")
            self._in_flight[entry.id] = task

    async def _one(self, entry: SpoolEntry) -> None:
        try:
            await self.process(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the worker; the message stays spooled
            log_event("worker.error", direction=self.direction, id=entry.id, error=repr(exc))
        finally:
            self._in_flight.pop(entry.id, None)
            self._wake.set()

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
