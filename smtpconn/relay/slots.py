"""Pre-created spool slots: empty files in ``<spool>/slots/`` whose *names* are already durable.

A message written into a free slot and ``fdatasync``'ed is on disk under a durable name after
one sync, so the spool can acknowledge it without waiting for a folder fsync (see
:mod:`smtpconn.relay.spool` for the whole argument). This module only keeps the pool: it
creates slots in batches (``O_CREAT | O_EXCL``, then one fsync of ``slots/``) and hands out
only slots whose batch fsync has finished. Refills run in a short-lived background thread, never
on the path of an acknowledgement; when the pool is empty (a burst), :meth:`SlotPool.take`
returns None and the spool falls back to ``tmp/`` + rename + folder fsync for that copy.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

from smtpconn.durable import SharedDirSync

SLOTS = "slots"
POOL_SIZE = 64  # free slots kept ready
BATCH = 32  # created per refill (one fsync of slots/ each); a refill starts below POOL_SIZE - BATCH
_NAME = re.compile(r"[0-9a-f]{16}")


def is_slot_name(name: str) -> bool:
    """A name the pool could have made (anything else in ``slots/`` is not a slot)."""
    return _NAME.fullmatch(name) is not None


def create_slots(folder: Path, count: int) -> list[Path]:
    """``count`` new empty files in ``folder``; their names are NOT durable until the caller
    fsyncs the folder. A file that could not be made is left out (the error is raised only
    if none could)."""
    made: list[Path] = []
    error: OSError | None = None
    for _ in range(count):
        path = folder / secrets.token_hex(8)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue  # a 64-bit random collision: just one slot fewer this time
        except OSError as exc:
            error = exc
            break
        made.append(path)
    if not made and error is not None:
        raise error
    return made


class SlotPool:
    """Free slots of one spool. Thread-safe; :meth:`take` never blocks on the disk."""

    def __init__(self, folder: Path, dir_sync: SharedDirSync) -> None:
        self.folder = folder
        self._dir_sync = dir_sync
        self._free: list[Path] = []
        self._lock = threading.Lock()
        self._refilling = False
        self._enabled = False
        # Bumped by start() and stop(): a refill begun before them must not add its slots to
        # a pool that a recovery has rebuilt since (the same files would be in it twice).
        self._generation = 0

    def start(self, free: Iterable[Path]) -> None:
        """Adopt ``free`` (empty slots whose names the caller has made durable) and top the pool
        up synchronously: called at start-up, after the spool lock and the recovery."""
        slots = list(free)
        missing = POOL_SIZE - len(slots)
        if missing > 0:
            with contextlib.suppress(OSError):  # no slots: every put takes the tmp/ path
                made = create_slots(self.folder, missing)
                self._dir_sync.sync()
                slots.extend(made)
        with self._lock:
            self._free = slots
            self._enabled = True
            self._generation += 1

    def stop(self) -> None:
        with self._lock:
            self._enabled = False
            self._generation += 1
            self._free = []  # left on disk: empty slots are reused at the next start

    def take(self) -> Path | None:
        """A free slot (its name durable), or None when there is none right now."""
        with self._lock:
            slot = self._free.pop() if self._free else None
            refill = self._enabled and not self._refilling and len(self._free) < POOL_SIZE - BATCH
            if refill:
                self._refilling = True
                generation = self._generation
        if refill:
            threading.Thread(
                target=self._refill, args=(generation,), name="spool-slots", daemon=True
            ).start()
        return slot

    def give_back(self, slot: Path) -> None:
        """A slot taken but not written (still empty): free again."""
        with self._lock:
            if self._enabled:
                self._free.append(slot)

    def free_count(self) -> int:
        with self._lock:
            return len(self._free)

    def _refill(self, generation: int) -> None:
        made: list[Path] = []
        try:
            made = create_slots(self.folder, BATCH)
            self._dir_sync.sync()  # only now are the new names durable: then they may be used
        except OSError:
            made = []  # left on disk if created: empty slots are reused at the next start
        finally:
            with self._lock:
                if self._enabled and self._generation == generation:
                    self._free.extend(made)
                self._refilling = False
