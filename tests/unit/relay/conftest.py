"""Fixtures shared by the relay's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smtpconn.relay.spool import Spool


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Spool]:
    """A spool held as the relay holds it (the lock taken: slots in use)."""
    spool = Spool(tmp_path / "spool")
    spool.lock()
    yield spool
    spool.unlock()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every function sent to a worker thread (hand-over and sink)."""
    sent: list[str] = []
    real = asyncio.to_thread

    async def counting(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return sent
