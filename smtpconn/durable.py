"""Durable file writes: the pieces of the write, fsync, rename, fsync-the-folder sequence.

A file's data is durable once the file is fsync'ed; its *name* is durable only once the folder
that holds it is fsync'ed as well (POSIX leaves a rename in the page cache until then). The
callers combine these steps differently: the profile and password files replace one file
(:func:`write_atomically`), the Maildir sink writes into ``tmp/`` and :func:`publish`\\ es into
``new/``, and the spool renames all the copies of one message before it fsyncs each queue
folder once (:func:`fsync_dir`). Bottom layer: imports nothing from smtpconn.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "publish", "write_and_sync", "write_atomically"]


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` (a rename into it, an unlink) survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_and_sync(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file ``fd``, fsync it and close it (also on failure).
    Whether a partly written file is removed is the caller's decision."""
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def publish(tmp: Path, final: Path) -> None:
    """Rename the synced file ``tmp`` to ``final`` and fsync ``final``'s folder; if the rename
    fails ``tmp`` is removed."""
    try:
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix.
    The temporary file (beside ``path``, exactly ``mode``) is removed on any failure."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        write_and_sync(fd, data)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    publish(tmp, path)
