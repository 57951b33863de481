"""The spool worker keeps its queue in memory: a backlog costs one read per message, not one per
message per wake-up; deferred, held, retried and deleted messages are still noticed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from smtpconn import durable
from smtpconn.relay.queue import delete, retry
from smtpconn.relay.spool import Envelope, RetryState, Spool, SpoolEntry
from smtpconn.relay.worker import QueueWorker


class CountingSpool(Spool):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.reads = 0
        self.state_reads = 0

    def read_entry(self, path: Path, direction: str) -> SpoolEntry | None:
        self.reads += 1
        return super().read_entry(path, direction)

    def state(self, entry: SpoolEntry) -> RetryState:
        self.state_reads += 1
        return super().state(entry)


def _put(spool: Spool, n: int, direction: str = "inbound") -> list[SpoolEntry]:
    return spool.put_many(
        [
            (Envelope(direction, "a@x.test", (f"r{i}@x.test",), time.time()), b"m%d" % i, None)
            for i in range(n)
        ]
    )


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _remover(spool: Spool, done: list[str]) -> Callable[[SpoolEntry], Awaitable[None]]:
    async def process(entry: SpoolEntry) -> None:
        await asyncio.sleep(0.001)
        done.append(entry.id)
        await asyncio.to_thread(spool.remove, entry)

    return process


async def test_a_backlog_is_read_once_and_delivered_in_arrival_order(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path / "s")
    spool.create()
    backlog = _put(spool, 40)  # left by an earlier run: found by the start-up scan
    done: list[str] = []
    worker = QueueWorker(spool, "inbound", _remover(spool, done), concurrency=1, poll=0.05)
    worker.start()
    await _until(lambda: len(done) == 40)
    fresh = _put(spool, 20)  # handed over by a listener, as the relay does after put_many
    worker.add(fresh)
    await _until(lambda: len(done) == 60)
    await worker.stop(1)
    assert done == [e.id for e in backlog + fresh]
    assert spool.reads == 40  # the old worker re-read every header on every wake-up: ~n²/2
    assert spool.state_reads <= 40 + 60  # start-up scan + one after each attempt
    assert worker.queued == 0 and spool.ids("inbound") == []


async def test_deferred_and_held_wait_and_queue_retry_releases_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.create()
    attempts: dict[str, int] = {}

    async def flaky(entry: SpoolEntry) -> None:
        n = attempts[entry.id] = attempts.get(entry.id, 0) + 1
        if entry.envelope.rcpts == ("held@x.test",) and n == 1:
            await asyncio.to_thread(spool.save_state, entry, RetryState(attempts=1, held=True))
        elif entry.envelope.rcpts == ("later@x.test",) and n == 1:
            state = RetryState(attempts=1, next_attempt=time.time() + 0.3)
            await asyncio.to_thread(spool.save_state, entry, state)
        else:
            await asyncio.to_thread(spool.remove, entry)

    worker = QueueWorker(spool, "inbound", flaky, poll=0.05, rescan=3600)
    worker.start()
    [held] = spool.put_many([(Envelope("inbound", "", ("held@x.test",), time.time()), b"h", None)])
    [later] = spool.put_many(
        [(Envelope("inbound", "", ("later@x.test",), time.time()), b"l", None)]
    )
    worker.add([held, later])
    await _until(lambda: attempts.get(later.id) == 2)  # retried when due, without any wake-up
    assert attempts[held.id] == 1 and spool.ids("inbound") == [held.id]
    await asyncio.sleep(0.2)
    assert attempts[held.id] == 1  # held: never retried on its own
    retry(spool, [held.id])  # `smtpconn queue retry` from another process
    await _until(lambda: attempts.get(held.id) == 2)
    await worker.stop(1)
    assert spool.ids("inbound") == []


async def test_queue_delete_is_noticed_and_a_crashing_delivery_does_not_spin(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "s")
    spool.create()
    calls: list[str] = []

    async def broken(entry: SpoolEntry) -> None:
        calls.append(entry.id)
        raise RuntimeError("bug")

    worker = QueueWorker(spool, "inbound", broken, poll=0.1, rescan=3600)
    worker.start()
    [entry] = _put(spool, 1)
    worker.add([entry])
    await _until(lambda: len(calls) >= 1)
    await asyncio.sleep(0.25)
    assert 2 <= len(calls) <= 5  # retried about once per poll, not thousands of times
    delete(spool, [entry.id])
    await _until(lambda: worker.queued == 0)
    settled = len(calls)
    await asyncio.sleep(0.25)
    assert len(calls) == settled
    await worker.stop(1)


def test_put_many_fsyncs_each_file_and_the_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "s")
    spool.create()
    file_syncs: list[int] = []
    dir_syncs: list[Path] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        file_syncs.append(fd)
        real_fdatasync(fd)

    # Files: fdatasync (durable.write_and_sync); the queue folder: the spool's shared fsync.
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    monkeypatch.setattr(durable, "fsync_dir", dir_syncs.append)
    entries = _put(spool, 3)
    assert len(file_syncs) == 3 and dir_syncs == [tmp_path / "s" / "inbound"]
    assert [spool.message(e) for e in entries] == [b"m0", b"m1", b"m2"]
    assert spool.ids("inbound") == sorted(e.id for e in entries)
    assert list((tmp_path / "s" / "tmp").iterdir()) == []


async def test_rescans_of_a_deferred_backlog_do_not_pile_up(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.create()
    for entry in _put(spool, 5):
        spool.save_state(entry, RetryState(attempts=3, next_attempt=time.time() + 3600))
    calls: list[str] = []

    async def never(entry: SpoolEntry) -> None:
        calls.append(entry.id)

    worker = QueueWorker(spool, "inbound", never, poll=0.02, rescan=0.02)
    worker.start()
    await _until(lambda: worker.queued == 5)
    await asyncio.sleep(0.3)  # many rescans, each re-reading the five states
    await worker.stop(1)
    assert calls == [] and len(worker._heap) == 5


def test_a_removal_without_the_folder_fsync_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "s")
    spool.create()
    first, second = _put(spool, 2)
    dir_syncs: list[Path] = []
    monkeypatch.setattr(durable, "fsync_dir", dir_syncs.append)
    spool.remove(first)
    assert dir_syncs == [tmp_path / "s" / "inbound"]
    spool.remove(second, durably=False)
    assert dir_syncs == [tmp_path / "s" / "inbound"]
    assert spool.ids("inbound") == []
