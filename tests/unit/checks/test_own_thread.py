"""checks.common.in_own_thread: CPU-only work never queues behind the run's busy default pool."""

from __future__ import annotations

import asyncio
import threading

import pytest

from smtpconn.checks.common import in_own_thread


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
