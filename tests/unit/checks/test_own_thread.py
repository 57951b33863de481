"""checks.common.in_own_thread and on_own_loop: work that must not wait for the run's busy
default pool or its busy event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from smtpconn.checks.common import in_own_thread, on_own_loop


async def test_result_and_error_reach_the_caller() -> None:
    assert await in_own_thread(lambda: 6 * 7) == 42

    def broken() -> int:
        raise ValueError("bad CA file")

    with pytest.raises(ValueError, match="bad CA file"):
        await in_own_thread(broken)


async def test_not_queued_behind_a_full_default_pool() -> None:
    release = threading.Event()
    # More blocked jobs than the default pool has threads (min(32, CPUs + 4)).
    blocked = [asyncio.to_thread(release.wait, 10) for _ in range(40)]
    pending = asyncio.gather(*blocked)
    try:
        assert await asyncio.wait_for(in_own_thread(lambda: "done"), 2) == "done"
    finally:
        release.set()
        await pending


async def test_own_loop_returns_raises_and_runs_elsewhere() -> None:
    caller = threading.get_ident()

    async def where() -> tuple[int, bool]:
        await asyncio.sleep(0)
        return threading.get_ident(), asyncio.get_running_loop() is not outer

    outer = asyncio.get_running_loop()
    ident, other_loop = await on_own_loop(where)
    assert ident != caller and other_loop

    async def broken() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await on_own_loop(broken)


async def test_cancelling_the_caller_cancels_the_work_on_its_loop() -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def endless() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.ensure_future(on_own_loop(endless))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 5)


async def test_the_loop_lingers_for_closings_under_way_after_the_result() -> None:
    closed = threading.Event()

    async def leaves_a_closing() -> str:
        # Like a TLS close waiting for the server's close_notify after the session's result.
        asyncio.get_running_loop().call_later(0.05, closed.set)
        return "result"

    assert await on_own_loop(leaves_a_closing, linger=5) == "result"
    assert await asyncio.to_thread(closed.wait, 5)


async def test_a_cancel_during_the_linger_raises_nothing_in_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The caller's deadline cancels it just as the result is handed back: the cancel reaches
    # the lingering loop, and its CancelledError escaped the thread as a traceback on stderr.
    errors: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_type))
    loop = asyncio.get_running_loop()
    caller: asyncio.Task[int] | None = None

    async def factory() -> int:
        loop.call_soon_threadsafe(time.sleep, 0.3)  # the caller's loop busy for a moment
        loop.call_soon_threadsafe(lambda: caller.cancel() if caller else None)
        return 1

    caller = asyncio.create_task(on_own_loop(factory, linger=1.0))
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(1.3)  # past the linger
    assert errors == []
