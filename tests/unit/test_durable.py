"""SharedDirSync (group commit of a folder fsync): nobody returns before an fsync that started
after they asked; callers that arrive while one runs share the next one. write_and_sync: all of
the data, one fdatasync, the descriptor closed whatever happens."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from smtpconn import durable
from smtpconn.durable import SharedDirSync, write_and_sync


def test_each_call_alone_runs_its_own_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(durable, "fsync_dir", synced.append)
    shared = SharedDirSync(tmp_path)
    shared.sync()
    shared.sync()
    assert synced == [tmp_path, tmp_path]


def test_callers_during_an_fsync_wait_for_the_next_one_and_share_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []  # the number of callers that had asked when each fsync started
    first_running, release_first = threading.Event(), threading.Event()
    asked = 0
    lock = threading.Lock()

    def slow_fsync(path: Path) -> None:
        started.append(asked)
        if len(started) == 1:
            first_running.set()
            assert release_first.wait(5)

    monkeypatch.setattr(durable, "fsync_dir", slow_fsync)
    shared = SharedDirSync(tmp_path)
    returned_after: list[int] = []

    def caller() -> None:
        nonlocal asked
        with lock:
            asked += 1
        shared.sync()
        returned_after.append(len(started))

    first = threading.Thread(target=caller)
    first.start()
    assert first_running.wait(5)
    # Four more ask while the first fsync runs: it started before them, so it cannot cover them.
    later = [threading.Thread(target=caller) for _ in range(4)]
    for t in later:
        t.start()
    while shared._requested < 5:  # all four hold a ticket
        threading.Event().wait(0.01)
    assert returned_after == []
    release_first.set()
    for t in [first, *later]:
        t.join(5)
    assert started == [1, 5]  # one fsync for the first, one shared by the four
    assert sorted(returned_after) == [1, 2, 2, 2, 2]


def test_a_failed_fsync_covers_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def failing_once(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(durable, "fsync_dir", failing_once)
    shared = SharedDirSync(tmp_path)
    with pytest.raises(OSError):
        shared.sync()
    shared.sync()  # not covered by the failed one: runs its own
    assert len(calls) == 2


def test_really_fsyncs_a_folder(tmp_path: Path) -> None:
    SharedDirSync(tmp_path).sync()


def test_write_and_sync_writes_everything_syncs_and_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    data = os.urandom(3 * 1024 * 1024 + 17)
    fd = os.open(tmp_path / "m", os.O_WRONLY | os.O_CREAT, 0o600)
    write_and_sync(fd, data)
    assert (tmp_path / "m").read_bytes() == data
    assert synced == [fd]
    with pytest.raises(OSError):
        os.fstat(fd)  # closed


def test_write_and_sync_closes_the_file_when_the_write_fails(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"")
    fd = os.open(tmp_path / "m", os.O_RDONLY)  # a write to it fails with EBADF
    with pytest.raises(OSError):
        write_and_sync(fd, b"x")
    with pytest.raises(OSError):
        os.fstat(fd)
