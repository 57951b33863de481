"""Fixtures shared by the relay's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpconn.relay.spool import Spool


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Spool]:
    """A spool held as the relay holds it (the lock taken: slots in use)."""
    spool = Spool(tmp_path / "spool")
    spool.lock()
    yield spool
    spool.unlock()
