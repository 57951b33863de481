"""Durable file writes: the pieces of the write, fsync, rename, fsync-the-folder sequence.

A file's data is durable once the file is fsync'ed; its *name* is durable only once the folder
that holds it is fsync'ed as well (POSIX leaves a rename in the page cache until then). The
callers combine these steps differently: the profile and password files replace one file
(:func:`write_atomically`), the Maildir sink writes into ``tmp/`` and :func:`publish`\\ es into
``new/``, and the spool renames all the copies of one message before it fsyncs each queue
folder once (:func:`fsync_dir`). Threads that renamed into the same folder at about the same time
can share one folder fsync (:class:`SharedDirSync`). Bottom layer: imports nothing from smtpconn.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from pathlib import Path

__all__ = ["SharedDirSync", "fsync_dir", "publish", "write_and_sync", "write_atomically"]


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` (a rename into it, an unlink) survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SharedDirSync:
    """Group commit for one folder's fsync: every caller of :meth:`sync` returns only after an
    fsync of the folder that *started* after it called (so after its own rename or unlink into
    the folder), but callers that arrive while one fsync runs share the next one instead of
    each running their own. Thread-safe; meant for worker threads, never the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._requested = 0  # tickets handed out
        self._covered = 0  # every ticket up to this one is covered by a finished fsync
        self._running = False

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._covered < ticket:
                if not self._running:
                    break  # this thread runs the next fsync, for everyone waiting
                self._cond.wait()
            else:
                return
            self._running = True
            covers = self._requested  # all of them asked before this fsync starts
        synced = False
        try:
            fsync_dir(self.path)
            synced = True
        finally:
            with self._cond:
                self._running = False
                # On failure nothing is covered: a waiter runs its own fsync (and sees the error).
                if synced:
                    self._covered = max(self._covered, covers)
                self._cond.notify_all()


def write_and_sync(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file ``fd``, sync it and close it (also on failure).
    Whether a partly written file is removed is the caller's decision.

    ``fdatasync``, not ``fsync``: it still writes the metadata needed to read the data back (the
    size, the block map of a new file) and skips only timestamps; the file's *name* is made
    durable by the caller's folder fsync either way."""
    # os.write rather than a file object, which costs an fstat, an ioctl and an lseek: in the
    # relay each blocking call from a worker thread is a GIL hand-off with the event loop.
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if not written:  # never for a regular file; a loop that cannot end otherwise
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
        os.fdatasync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path, dir_sync: SharedDirSync | None = None) -> None:
    """Rename the synced file ``tmp`` to ``final`` and fsync ``final``'s folder (through
    ``dir_sync``, shared with other threads, when given); if the rename fails ``tmp`` is
    removed."""
    try:
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if dir_sync is None:
        fsync_dir(final.parent)
    else:
        dir_sync.sync()


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
