"""The spool's pre-created slots (real files): a message is durable after one ``fdatasync`` in
a slot whose name was made durable beforehand; what a crash leaves in ``slots/`` is sorted out
at the next start: a whole record is queued under the id in its header, a torn one removed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from smtpconn.relay import spool as spool_module
from smtpconn.relay.queue import list_queue
from smtpconn.relay.slots import BATCH, POOL_SIZE, SLOTS, is_slot_name
from smtpconn.relay.spool import MAGIC, Envelope, Spool, checksum, complete_record

MESSAGE = b"From: a@x.test\r\nSubject: slot\r\n\r\nbody\r\n"


def _envelope(direction: str = "inbound") -> Envelope:
    return Envelope(direction, "a@x.test", ("support@example.com",), time.time(), {"tag": "t"})


def _record(entry_id: str, message: bytes = MESSAGE, direction: str = "inbound") -> bytes:
    """What the relay writes into a slot (the header as Spool._write_copy makes it)."""
    header = {
        "mail_from": "a@x.test",
        "rcpts": ["support@example.com"],
        "received_at": 1.5,
        "meta": {"tag": "authenticated"},
        "id": entry_id,
        "dir": direction,
        "slot": "",
        "len": len(message),
        "sum": checksum(message),
    }
    return MAGIC + json.dumps(header).encode() + b"\n" + message


def _slots(spool: Spool) -> list[Path]:
    return sorted((spool.directory / SLOTS).iterdir())


def test_lock_creates_a_pool_of_empty_slots(locked: Spool) -> None:
    slots = _slots(locked)
    assert len(slots) == POOL_SIZE
    assert all(is_slot_name(p.name) and p.stat().st_size == 0 for p in slots)


def test_put_writes_into_a_slot_and_links_the_queue_name(locked: Spool) -> None:
    entry = locked.put_many([(_envelope(), MESSAGE, None)])[0]
    slot = locked.directory / SLOTS / entry.slot
    assert is_slot_name(entry.slot)
    assert entry.path.samefile(slot)  # one file, two names: no copy
    assert not list((locked.directory / "tmp").iterdir())
    header = complete_record(entry.path.read_bytes())
    assert header is not None
    assert (header["id"], header["dir"], header["slot"]) == (entry.id, "inbound", entry.slot)
    again = locked.find(entry.id)
    assert again is not None and again.slot == entry.slot
    assert locked.message(again) == MESSAGE


def test_durable_removal_removes_both_names(locked: Spool) -> None:
    entry = locked.put_many([(_envelope("outbound"), MESSAGE, None)])[0]
    reread = locked.find(entry.id)  # a retry reads the entry back: the slot name comes along
    assert reread is not None
    kept = locked.directory / "kept"
    os.link(entry.path, kept)  # what a power cut that undid both unlinks would bring back
    locked.remove(reread)
    assert not entry.path.exists()
    assert not (locked.directory / SLOTS / entry.slot).exists()
    assert kept.stat().st_size == 0  # emptied and synced before the unlinks: nothing to resend


def test_an_emptied_entry_brought_back_is_removed_at_start_up(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    emptied = spool.directory / "outbound" / "00000000000000000008.cafe0008.msg"
    emptied.write_bytes(b"")
    emptied.with_suffix(".state").write_text("{}")
    assert not list_queue(spool)
    spool.lock()
    try:
        assert not emptied.exists() and not emptied.with_suffix(".state").exists()
    finally:
        spool.unlock()


def test_quick_removal_removes_both_names_too(locked: Spool) -> None:
    entry = locked.put_many([(_envelope(), MESSAGE, None)])[0]
    locked.remove(entry, durably=False)
    assert not entry.path.exists()
    assert not (locked.directory / SLOTS / entry.slot).exists()


def test_the_pool_refills_in_the_background_and_falls_back_to_tmp_when_empty(
    locked: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = locked.put_many([(_envelope(), MESSAGE, None) for _ in range(POOL_SIZE - BATCH + 1)])
    assert all(e.slot for e in entries)
    deadline = time.monotonic() + 10
    while locked._slots.free_count() < POOL_SIZE - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert locked._slots.free_count() >= POOL_SIZE - 1
    monkeypatch.setattr(locked._slots, "take", lambda: None)  # a burst emptied it
    fallback = locked.put_many([(_envelope(), MESSAGE, None)])[0]
    assert fallback.slot == ""
    assert os.stat(fallback.path).st_nlink == 1
    assert locked.message(fallback) == MESSAGE


def test_without_the_lock_puts_take_the_tmp_path(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    entry = spool.put_many([(_envelope(), MESSAGE, None)])[0]
    assert entry.slot == "" and not _slots(spool)


def test_a_whole_record_left_in_a_slot_is_queued_under_its_id(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    slot = spool.directory / SLOTS / "0123456789abcdef"
    slot.write_bytes(_record("00000000000000000001.cafe0001"))
    # Before any relay starts, `queue list` shows it (from the slot).
    [listed] = list_queue(spool)
    assert listed.entry.id == "00000000000000000001.cafe0001"
    assert listed.entry.envelope.meta == {"tag": "authenticated"}
    spool.lock()
    try:
        [entry] = list(spool.entries("inbound"))
        assert entry.id == "00000000000000000001.cafe0001"
        assert entry.envelope.received_at == 1.5
        assert spool.message(entry) == MESSAGE
        assert not slot.exists()
        assert [i.entry.id for i in list_queue(spool)] == [entry.id]
    finally:
        spool.unlock()


def test_a_record_whose_queue_name_survived_too_is_not_queued_twice(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    record = _record("00000000000000000002.cafe0002")
    (spool.directory / "inbound" / "00000000000000000002.cafe0002.msg").write_bytes(record)
    slot = spool.directory / SLOTS / "0123456789abcdef"
    slot.write_bytes(record)
    assert len(list_queue(spool)) == 1  # listed once, from its folder
    spool.lock()
    try:
        assert [e.id for e in spool.entries("inbound")] == ["00000000000000000002.cafe0002"]
        assert not slot.exists()
    finally:
        spool.unlock()


def test_a_record_torn_at_any_byte_is_removed_and_never_queued(locked: Spool) -> None:
    record = _record("00000000000000000003.cafe0003", b"x" * 40 + b"\r\n")
    slot = locked.directory / SLOTS / "0123456789abcdef"
    for cut in range(1, len(record)):
        assert complete_record(record[:cut]) is None, cut
        slot.write_bytes(record[:cut])
        assert not list(locked.stranded("inbound")), cut
        locked._recover_slots()
        assert not slot.exists(), cut
        assert not list(locked.entries("inbound")), cut
    assert complete_record(record) is not None


def test_a_zero_filled_tail_is_torn(locked: Spool) -> None:
    record = _record("00000000000000000004.cafe0004", b"y" * 100)
    torn = record[:-30] + bytes(30)  # the size reached the disk, the last block did not
    assert complete_record(torn) is None
    slot = locked.directory / SLOTS / "0123456789abcdef"
    slot.write_bytes(torn)
    assert not list(locked.stranded("inbound"))
    locked._recover_slots()
    assert not slot.exists() and not list(locked.entries("inbound"))


def test_a_record_naming_a_bad_id_or_direction_is_not_whole(tmp_path: Path) -> None:
    assert complete_record(_record("../../etc/x")) is None
    assert complete_record(_record(".hidden")) is None
    assert complete_record(_record("00000000000000000005.cafe0005", direction="sideways")) is None


def test_empty_slots_are_reused_and_strangers_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    folder = spool.directory / SLOTS
    kept = folder / "0123456789abcdef"
    kept.write_bytes(b"")
    (folder / "0123456789abcdef.state").write_text("{}")  # `queue retry` on a stranded entry
    spool.lock()
    try:
        names = {p.name for p in _slots(spool)}
        assert kept.name in names and len(names) == POOL_SIZE
        assert all(is_slot_name(n) for n in names)
    finally:
        spool.unlock()


def test_old_format_files_are_still_read_and_removed(locked: Spool) -> None:
    header = {"mail_from": "a@x.test", "rcpts": ["b@y.test"], "received_at": 2.0, "meta": {}}
    old = locked.directory / "outbound" / "00000000000000000006.cafe0006.msg"
    old.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + MESSAGE)
    [entry] = list(locked.entries("outbound"))
    assert (entry.id, entry.slot, entry.size) == ("00000000000000000006.cafe0006", "", len(MESSAGE))
    assert locked.message(entry) == MESSAGE
    locked.remove(entry)
    assert not old.exists()


def test_deleting_a_stranded_message_removes_its_slot(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    record = _record("00000000000000000007.cafe0007")
    header = json.loads(record[len(MAGIC) :].split(b"\n", 1)[0])
    header["slot"] = "0123456789abcdef"
    slot = spool.directory / SLOTS / "0123456789abcdef"
    slot.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + MESSAGE)
    [item] = list_queue(spool)
    spool.remove(item.entry)
    assert not slot.exists() and not list_queue(spool)


def test_a_failed_write_frees_nothing_it_should_not(
    locked: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, data: bytes) -> None:
        os.close(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "write_and_sync", broken)
    before = len(_slots(locked))
    with pytest.raises(OSError):
        locked.put_many([(_envelope(), MESSAGE, None)])
    assert len(_slots(locked)) == before - 1  # the used slot is gone, nothing queued
    assert not list(locked.entries("inbound"))


def test_without_hard_links_every_put_takes_the_tmp_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    spool = Spool(tmp_path / "spool")
    monkeypatch.setattr(spool_module.os, "link", no_links)
    spool.lock()
    try:
        monkeypatch.undo()
        entry = spool.put_many([(_envelope(), MESSAGE, None)])[0]
        assert entry.slot == "" and spool.message(entry) == MESSAGE
        assert not list((spool.directory / "tmp").iterdir())
    finally:
        spool.unlock()


def test_a_slot_that_is_not_empty_is_never_written_over(locked: Spool) -> None:
    for slot in _slots(locked):  # never expected: a longer old record would make it look torn
        slot.write_bytes(b"old bytes")
    entry = locked.put_many([(_envelope(), MESSAGE, None)])[0]
    assert entry.slot == "" and locked.message(entry) == MESSAGE


def test_a_slot_removed_while_the_recovery_reads_does_not_stop_it(
    locked: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Maildir delivery agent of a relay killed a moment ago may still remove a delivered
    message's names while the next relay starts (so may `queue delete`)."""
    folder = locked.directory / SLOTS
    gone = folder / "0123456789abcdef"
    gone.write_bytes(_record("00000000000000000006.cafe0006"))
    kept = folder / "fedcba9876543210"
    kept.write_bytes(_record("00000000000000000007.cafe0007"))
    real = Spool._recover_slot

    def racing(spool: Spool, path: Path) -> None:
        if path == gone:
            path.unlink()  # between the listing and the read
        real(spool, path)

    monkeypatch.setattr(Spool, "_recover_slot", racing)
    locked._recover_slots()
    assert [e.id for e in locked.entries("inbound")] == ["00000000000000000007.cafe0007"]
    assert not gone.exists() and not kept.exists()
