"""The durable on-disk spool: one immutable file per accepted message, Maildir style.

Layout under the spool directory::

    slots/<16 hex>       pre-created files whose names are durable: empty (free), or a record
                         (also a second name of a queued message, until it is removed)
    tmp/                 being written when no slot is free; emptied at start-up
    inbound/<id>.msg     accepted from the customer's server / forwarding, for the sink
    outbound/<id>.msg    accepted from the help desk, for the customer's server
    <dir>/<id>.state     retry state (attempts, next attempt, last error, held); advisory
    .lock                flock held by the one relay that works on this spool
    .kick                replaced by ``smtpconn queue retry/delete``: the relay re-reads states

A record is ``SMTPCONN-SPOOL 1``, a JSON header line (envelope; since slots also ``id``, ``dir``,
``slot``, ``len`` and a blake2b ``sum`` of the message) and the message. Files without the new
keys are read as before.

A message is acknowledged (``250``) only after :meth:`Spool.put_many` returned, and that is only
after the message is on disk under a name that survives a power cut. Normally one sync does it:

1. The relay holding the lock keeps a pool of *slots*: empty files created in batches with
   ``O_CREAT | O_EXCL``, then ``slots/`` is fsync'ed once, and only then are they used. A slot's
   name is durable before any message is written into it.
2. The message is written into a free slot and ``fdatasync``'ed (POSIX: the data and the size
   needed to read it back). It is now durable under the slot's durable name.
3. Its queue name ``<dir>/<id>.msg`` is a hard link to the slot, made without waiting for the
   folder's fsync; ``put_many`` returns and the ``250`` follows.
4. The slot name stays until the queue folder has been fsync'ed after the link: the running
   relay does that about once a second for everything spooled since (:meth:`Spool.settle`:
   one fsync per queue folder, then the slot names are unlinked), or the entry is removed
   first (:meth:`Spool.remove` unlinks both). So no ordering between the writes of two folders
   is assumed: whatever reaches the disk of the link, the message is reachable through its
   slot until its queue name is durable. (A *rename* out of ``slots/`` would not
   do: nothing orders the slot's removal from ``slots/`` before the new name in the queue
   folder, so a power cut could keep the one and lose the other.) A durable removal — every
   sink but Maildir, outbound — empties the file first (``ftruncate`` + ``fdatasync``, one
   sync), so a name a power cut brings back holds nothing to deliver again; ``queue delete``
   (another process) unlinks both names and fsyncs ``slots/`` and the queue folder. The Maildir
   sink's quick removal may be undone, and its duplicate check by spool id (kept: the id is in
   the slot's header) skips the message then.
5. At start-up, under the lock, every record in ``slots/`` is checked: a *complete* one (magic,
   header, ``len`` and ``sum`` match) may have been acknowledged: it is linked under the id in
   its header if that name is missing (a name that exists is the same message); a *torn* one
   (killed during the write, a zero-filled tail after a power cut) never had its
   ``fdatasync`` return, so it was never acknowledged, and is removed; empty slots are reused.
   The queue folders are fsync'ed before any slot name is removed. ``smtpconn queue list``
   shows complete records that have no queue name (:meth:`Spool.stranded`), so a message never
   disappears from the listing while no relay runs.

Without a free slot (a burst that emptied the pool, or a process without the lock) a copy is
written to ``tmp/``, fdatasync'ed, renamed into its queue folder and that folder fsync'ed (two
syncs, shared with other transactions). A SIGKILL before the rename leaves only a ``tmp/`` file
(not acknowledged, removed at start-up).

Why files rather than SQLite: each message is written once and deleted once, never updated, so
the durability rule needs one file sync per message and no write-ahead log to tune;
concurrent readers (``smtpconn queue list``) need no locking; an administrator can inspect, copy or
rescue a stuck message with ``ls`` and ``cat``; and a corrupt file affects one message, not the
queue. Retry state is mutable but advisory: losing it only means a retry happens sooner.

Ids are ``<nanoseconds>.<random>``: sortable by arrival, unique without coordination.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smtpconn.durable import SharedDirSync, fsync_dir, write_and_sync
from smtpconn.errors import SmtpconnFailure, UsageError
from smtpconn.relay.slots import SLOTS, SlotPool, is_slot_name

MAGIC = b"SMTPCONN-SPOOL 1\n"
DIRECTIONS = ("inbound", "outbound")
# Messages kept in memory between their spooling and their first hand-over (Spool.put_many with
# keep=True): the hand-over of a message the listener has just written skips reading it back.
# Bounded: when the queue runs behind, the oldest fall back to a read from the file.
FRESH_BYTES_MAX = 8 * 1024 * 1024
FRESH_MESSAGE_MAX = 1024 * 1024
KICK = ".kick"  # replaced by `smtpconn queue retry/delete` so a running relay looks again


@dataclass(frozen=True, slots=True)
class Envelope:
    direction: str  # inbound | outbound
    mail_from: str  # "" is the null sender (bounces)
    rcpts: tuple[str, ...]
    received_at: float
    meta: dict[str, Any] = field(default_factory=dict)  # tags, client IP, helo, TLS, auth user


@dataclass(slots=True)
class RetryState:
    attempts: int = 0
    next_attempt: float = 0.0  # epoch seconds; 0 = now
    last_error: str | None = None
    held: bool = False  # a permanent sink failure: kept, never retried until `queue retry`
    done: list[str] = field(default_factory=list)  # recipients already delivered (outbound)
    # The server's lane was throttled: not retried before this (epoch seconds; 0 = not throttled)
    throttled_until: float = 0.0
    # Outbound retry window: counted from the first real failure (0 = none yet), less the
    # seconds spent since waiting for the lane (throttle, budget), which run from pause_from
    # (0 = none) to the next attempt.
    failing_since: float = 0.0
    paced_for: float = 0.0
    pause_from: float = 0.0
    # Inbound: the first hand-over's Authentication-Results and auth= word. Every later attempt
    # reuses them, so a retry never re-decides the unauthenticated policy nor changes the tag.
    authres: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    id: str
    envelope: Envelope
    size: int
    path: Path
    slot: str = ""  # the name in slots/ that also holds the message until it is removed


@dataclass(frozen=True, slots=True)
class _Written:
    source: Path  # the slot (linked) or the tmp/ file (renamed)
    entry: SpoolEntry
    slotted: bool


# Called by a listener (on the event loop) with the direction and the entries it just spooled.
OnStored = Callable[[str, Sequence[SpoolEntry]], None]


class SpoolDamaged(SmtpconnFailure):
    """A spool record whose bytes do not match its own length and checksum."""


class SpoolLocked(UsageError):
    pass


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _valid_id(entry_id: object) -> bool:
    return (
        isinstance(entry_id, str)
        and bool(entry_id)
        and "/" not in entry_id
        and "\0" not in entry_id
        and not entry_id.startswith(".")
    )


def checksum(message: bytes) -> str:
    return hashlib.blake2b(message, digest_size=16).hexdigest()


def complete_record(data: bytes) -> dict[str, Any] | None:
    """The header of ``data`` if it is a whole spool record that says so itself: magic, a JSON
    header line naming its id and direction, then exactly ``len`` bytes of message whose
    checksum is ``sum``. A record torn anywhere (a crash during the write, before its
    ``fdatasync`` returned), or with a zero-filled tail, is not: it was never acknowledged."""
    if not data.startswith(MAGIC):
        return None
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(data[len(MAGIC) : end])
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    message = memoryview(data)[end + 1 :]
    if (
        not _valid_id(header.get("id"))
        or header.get("dir") not in DIRECTIONS
        or header.get("len") != len(message)
        or header.get("sum") != checksum(bytes(message))
    ):
        return None
    return header


def new_id() -> str:
    return f"{time.time_ns():020d}.{secrets.token_hex(4)}"


def backoff_delay(attempts: int, initial: float, cap: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts: initial, 2x, 4x … capped."""
    if attempts <= 0:
        return 0.0
    return float(min(cap, initial * (2 ** min(attempts - 1, 30))))


def _damaged(header: object, message: bytes) -> bool:
    """Whether a record that names its length and checksum does not match them (older records
    name neither and are taken as they are)."""
    if not isinstance(header, dict) or "sum" not in header:
        return False
    return bool(header.get("len") != len(message) or header.get("sum") != checksum(message))


def _header_line(envelope: Envelope, message: bytes, entry_id: str, slot: Path | None) -> bytes:
    header = {
        "mail_from": envelope.mail_from,
        "rcpts": list(envelope.rcpts),
        "received_at": envelope.received_at,
        "meta": envelope.meta,
        # What makes the record tell whether it is whole (complete_record): a slot has no name
        # of its own that says the message is complete.
        "id": entry_id,
        "dir": envelope.direction,
        "slot": slot.name if slot is not None else "",
        "len": len(message),
        "sum": checksum(message),
    }
    return json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _open_empty(slot: Path) -> int | None:
    """The slot open for writing, or None if it is gone or not empty (never expected: a record
    written over a longer one would look torn). No O_TRUNC: on an empty file it would still
    change the inode's times, a metadata write of its own."""
    try:
        fd = os.open(slot, os.O_WRONLY)
    except OSError:
        return None
    if os.fstat(fd).st_size == 0:
        return fd
    os.close(fd)
    return None


def _emptied(path: Path, slot: Path) -> bool:
    """Truncate the message file (known by either of its names) to nothing and sync that: once
    this returns True its bytes are gone from the disk under every name it has."""
    for name in (path, slot):
        try:
            fd = os.open(name, os.O_WRONLY)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        try:
            os.ftruncate(fd, 0)
            os.fdatasync(fd)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True
    return False  # neither name left: removed by someone else (who synced it)


def _entry(
    entry_id: str, direction: str, header: dict[str, Any], size: int, path: Path
) -> SpoolEntry:
    slot = header.get("slot")
    envelope = Envelope(
        direction=direction,
        mail_from=str(header.get("mail_from", "")),
        rcpts=tuple(str(r) for r in header.get("rcpts", [])),
        received_at=float(header.get("received_at", 0.0)),
        meta=dict(header.get("meta", {})),
    )
    return SpoolEntry(
        id=entry_id,
        envelope=envelope,
        size=size,
        path=path,
        slot=slot if isinstance(slot, str) and is_slot_name(slot) else "",
    )


class Spool:
    """Files on disk; every method is synchronous (run it off the event loop)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None
        # One per queue folder: sessions spooling at the same time share its fsync.
        self._dir_syncs = {
            directory / d: SharedDirSync(directory / d) for d in (*DIRECTIONS, SLOTS)
        }
        # Free slots: only the relay holding the lock uses them (others write through tmp/).
        self._slots = SlotPool(directory / SLOTS, self._dir_syncs[directory / SLOTS])
        # Messages just spooled with keep=True, for their first hand-over (take_fresh).
        self._fresh: OrderedDict[str, bytes] = OrderedDict()
        self._fresh_bytes = 0
        self._fresh_lock = threading.Lock()
        # Slots whose message got its queue name since the last settle(): (slot, queue folder).
        self._unsettled: list[tuple[Path, Path]] = []
        self._unsettled_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------

    def create(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in ("tmp", SLOTS, *DIRECTIONS):
                (self.directory / name).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the spool {self.directory}: {exc.strerror}",
                fix="set relay.spool to a folder this user can write",
            ) from None

    def lock(self) -> None:
        """Take the spool for this process; a second relay on the same spool is refused."""
        self.create()
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(
                f"another relay is already using the spool {self.directory}",
                fix="stop it first, or give this one its own relay.spool",
            ) from None
        self._lock_fd = fd
        self._clean_tmp()
        free = self._recover_slots()
        # After the recovery: a state file whose message the recovery linked again is kept.
        self._clean_orphan_states()
        if self._links_work():
            self._slots.start(free)

    def unlock(self) -> None:
        self._slots.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _clean_tmp(self) -> None:
        # Files in tmp/ were never acknowledged. Runs before the recovery of slots/, whose
        # folder fsyncs make the removal of emptied .msg names durable before any empty slot
        # (possibly the same inode) is handed out again.
        for path in (self.directory / "tmp").iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
        for direction in DIRECTIONS:
            folder = self.directory / direction
            # Emptied by a durable removal whose unlink a power cut undid (Spool.remove).
            for message in folder.glob("*.msg"):
                with contextlib.suppress(OSError):
                    if message.stat().st_size == 0:
                        message.unlink()

    def _clean_orphan_states(self) -> None:
        # State files without a message: leftovers of a crash between the unlinks of remove().
        for direction in DIRECTIONS:
            folder = self.directory / direction
            for state in folder.glob("*.state"):
                if not state.with_suffix(".msg").exists():
                    with contextlib.suppress(OSError):
                        state.unlink()

    def _links_work(self) -> bool:
        """Whether this file system has hard links (a slot keeps its name beside the queue
        name); without them every message takes the tmp/ + rename path."""
        probe = self.directory / "tmp" / f"probe.{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            os.link(probe, probe.with_suffix(".link"))
        except OSError:
            return False
        finally:
            for path in (probe, probe.with_suffix(".link")):
                with contextlib.suppress(OSError):
                    path.unlink()
        return True

    def _recover_slots(self) -> list[Path]:
        """Sort out what an earlier run left in ``slots/``; returns the free (empty) slots.

        A complete record is a message that was (or may have been) acknowledged: it gets its
        name in its folder under the id in its header (a hard link, if that name is missing),
        and only once those folders are fsync'ed is the slot name removed, so no crash in
        between can lose it. A torn record was never acknowledged and is removed. The last
        fsync of ``slots/`` makes those removals durable, and the names of the empty slots
        (some may come from a refill whose fsync never ran)."""
        folder = self.directory / SLOTS
        free: list[Path] = []
        done: list[Path] = []
        for path in sorted(folder.iterdir()):
            try:
                if not is_slot_name(path.name) or not path.is_file():
                    done.append(path)  # not a slot (a `queue retry` state file …)
                elif path.stat().st_size == 0:
                    free.append(path)
                else:
                    self._recover_slot(path)
                    done.append(path)
            except FileNotFoundError:
                # Removed since the listing: by `queue delete`, or by the Maildir delivery
                # agent of a relay killed a moment ago, finishing what it was sent (it removes
                # a message's names only once the sink's copy is durable).
                continue
        for direction in DIRECTIONS:
            fsync_dir(self.directory / direction)
        for path in done:
            with contextlib.suppress(OSError):
                path.unlink()
        fsync_dir(folder)
        return free

    def _recover_slot(self, path: Path) -> None:
        with path.open("rb") as handle:
            magic = handle.read(len(MAGIC))
            line = handle.readline(1024 * 1024)
            if magic != MAGIC or self._queued(line):
                return  # not a record, or queued (the usual case): not read further
            header = complete_record(magic + line + handle.read())
        if header is None:
            return  # torn: removed with the others
        final = self.directory / str(header["dir"]) / f"{header['id']}.msg"
        # FileExistsError: both names survived, the same message. FileNotFoundError: `queue
        # delete` removed the slot meanwhile (it also removes the queue name, see remove()).
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            os.link(path, final)

    # -- writing ----------------------------------------------------------------------------

    def put(self, envelope: Envelope, message: bytes, entry_id: str | None = None) -> str:
        """Store durably; when this returns the message may be acknowledged."""
        return self.put_many([(envelope, message, entry_id)])[0].id

    def put_many(
        self, items: Iterable[tuple[Envelope, bytes, str | None]], *, keep: bool = False
    ) -> list[SpoolEntry]:
        """Store several messages durably (the copies of one message for its recipients); when
        this returns they may all be acknowledged. ``items`` may be a generator that builds
        each copy as it is asked for: only one copy is then in memory at a time.

        Each copy is written into a free slot (a file whose name is already durable) and
        ``fdatasync``'ed: from then on it survives a power cut under the slot's name. It then
        gets its queue name by a hard link, whose folder fsync is not waited for: the slot
        name keeps the message until :meth:`remove`, and the relay's start-up recovery links
        a slot whose queue name was lost. One sync per copy, none of a folder.

        Without a free slot (not the relay holding the lock, or a burst that emptied the
        pool) the copy is written and fsync'ed in ``tmp/``, renamed, and each queue folder
        touched is fsync'ed once: transactions finishing together share it (each still
        returns only after an fsync that started after its own renames). A crash in between
        leaves some copies queued and none acknowledged: the client sends again and the help
        desk may see a duplicate, never a loss.

        With ``keep``, the bytes of small messages are also kept in memory (bounded, oldest
        out) until :meth:`take_fresh` takes them for the first hand-over, which then need not
        read the file back in another worker-thread trip.
        """
        written: list[_Written] = []
        try:
            for envelope, message, entry_id in items:
                written.append(self._write_copy(envelope, message, entry_id or new_id()))
                if keep:
                    self._keep_fresh(written[-1].entry.id, message)
            for copy in written:
                if copy.slotted:
                    os.link(copy.source, copy.entry.path)
                else:
                    os.rename(copy.source, copy.entry.path)
        except BaseException:
            for copy in written:
                self._forget_fresh(copy.entry.id)
                if copy.slotted and not copy.entry.path.exists():
                    # Refused (451): a power cut must not bring the record back through the
                    # slot's unsynced unlink, so its bytes go first (one sync).
                    _emptied(copy.source, copy.source)
                with contextlib.suppress(OSError):
                    copy.source.unlink()
            raise
        for directory in {c.entry.path.parent for c in written if not c.slotted}:
            self._sync_dir(directory)
        linked = [(c.source, c.entry.path.parent) for c in written if c.slotted]
        if linked:
            with self._unsettled_lock:
                self._unsettled.extend(linked)
        return [copy.entry for copy in written]

    def settle(self) -> int:
        """Leave the messages linked since the last call with their queue name alone: fsync the
        queue folders (their links are then durable), then remove the slot names. Called by the
        running relay about once a second, off every message's path. Until then a message has
        two names and taking its queue file away by hand (``rm``, ``mv``) does not take it out
        of the queue: the slot brings it back; afterwards it does, as it always did. Returns
        how many slots were released."""
        with self._unsettled_lock:
            pending, self._unsettled = self._unsettled, []
        for folder in {folder for _slot, folder in pending}:
            self._sync_dir(folder)
        for slot, _folder in pending:
            # Gone already when the message was delivered and removed meanwhile. Not synced:
            # a slot name a power cut brings back is dropped by the recovery (its queue name
            # is durable now) or is empty (a removal emptied it).
            with contextlib.suppress(FileNotFoundError):
                slot.unlink()
        return len(pending)

    def _keep_fresh(self, entry_id: str, message: bytes) -> None:
        if len(message) > FRESH_MESSAGE_MAX:
            return
        with self._fresh_lock:
            self._fresh[entry_id] = message
            self._fresh_bytes += len(message)
            while self._fresh_bytes > FRESH_BYTES_MAX:
                _id, old = self._fresh.popitem(last=False)
                self._fresh_bytes -= len(old)

    def _forget_fresh(self, entry_id: str) -> bytes | None:
        with self._fresh_lock:
            message = self._fresh.pop(entry_id, None)
            if message is not None:
                self._fresh_bytes -= len(message)
            return message

    def take_fresh(self, entry: SpoolEntry) -> bytes | None:
        """The message of ``entry`` if it was spooled by this process with ``keep`` and not
        taken since (then it has never been handed over, so it has no retry state); None
        otherwise (read it from the file). Cheap enough for the event loop (one ``stat``).

        None as well once the file is gone: ``smtpconn queue delete`` (another process) removes
        a message that waits behind a throttled lane, and the bytes kept here must not deliver
        it anyway."""
        message = self._forget_fresh(entry.id)
        if message is None or not entry.path.exists():
            return None
        return message

    def _write_copy(self, envelope: Envelope, message: bytes, entry_id: str) -> _Written:
        if envelope.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {envelope.direction!r}")
        slot = self._slots.take()
        try:  # before anything is opened: a header that cannot be written leaks nothing
            data = _header_line(envelope, message, entry_id, slot)
        except BaseException:
            if slot is not None:
                self._slots.give_back(slot)
            raise
        fd = _open_empty(slot) if slot is not None else None
        if fd is None:
            if slot is not None:
                slot = None
                data = _header_line(envelope, message, entry_id, None)
            source = self.directory / "tmp" / f"{entry_id}.msg"
            fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        else:
            assert slot is not None
            source = slot
        try:
            write_and_sync(fd, MAGIC + data + b"\n" + message)
        except BaseException:
            with contextlib.suppress(OSError):
                source.unlink()
            raise
        final = self.directory / envelope.direction / f"{entry_id}.msg"
        entry = SpoolEntry(
            id=entry_id,
            envelope=envelope,
            size=len(message),
            path=final,
            slot=slot.name if slot is not None else "",
        )
        return _Written(source, entry, slot is not None)

    def remove(self, entry: SpoolEntry, *, durably: bool = True) -> None:
        """Forget a delivered (or bounced, or deleted) message, durably unless ``durably`` is
        False: then the unlink is not followed by a folder fsync, and a power cut (not a
        process crash: the kernel keeps an unlink it was given) may bring the entry back. Only
        for a message whose next hand-over is harmless: one the sink already holds under a name
        it finds again by spool id (the Maildir sink), so the entry is removed without a second
        copy.

        A message spooled through a slot has a second name there (see :meth:`put_many`), so a
        durable removal must make sure a power cut cannot bring it back through either name.
        The relay (holding the lock) empties the file instead — ``ftruncate`` + ``fdatasync``,
        one sync — before it unlinks both names: a name a power cut brings back is an empty
        file (a free slot, or a ``.msg`` removed at start-up). Anyone else (``queue delete``
        beside a running relay, whose delivery may be reading the file) unlinks both names and
        fsyncs ``slots/`` and the queue folder."""
        self._forget_fresh(entry.id)
        slot = self.directory / SLOTS / entry.slot if is_slot_name(entry.slot) else None
        if entry.path.parent == self.directory / SLOTS:
            # Listed from slots/ (stranded): the relay may have linked its queue name since
            # (put_many between fdatasync and link, or the start-up recovery): that name goes
            # too, or a message reported deleted would still be delivered.
            slot = entry.path
            entry = dataclasses.replace(
                entry, path=self.directory / entry.envelope.direction / f"{entry.id}.msg"
            )
            durably = True
        if durably and slot is not None and self._lock_fd is not None:
            # The relay's own removal after a delivery: one sync instead of two folder fsyncs.
            durably = not _emptied(entry.path, slot)
        slot_removed = False
        if slot is not None:
            with contextlib.suppress(FileNotFoundError):
                slot.unlink()
                slot_removed = True
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        if durably:
            if slot_removed:
                self._sync_dir(self.directory / SLOTS)
            self._sync_dir(entry.path.parent)
        with contextlib.suppress(FileNotFoundError):
            entry.path.with_suffix(".state").unlink()

    def removal_names(self, entry: SpoolEntry) -> list[Path] | None:
        """The names ``remove(entry, durably=False)`` unlinks, for a process that unlinks them
        itself (the Maildir delivery agent) after it made the sink's copy durable; None when
        that removal must be :meth:`remove`'s own (an entry listed from ``slots/``)."""
        if entry.path.parent == self.directory / SLOTS:
            return None
        self._forget_fresh(entry.id)
        slot = [self.directory / SLOTS / entry.slot] if is_slot_name(entry.slot) else []
        return [*slot, entry.path, entry.path.with_suffix(".state")]

    def _sync_dir(self, folder: Path) -> None:
        shared = self._dir_syncs.get(folder)
        if shared is None:
            fsync_dir(folder)
        else:
            shared.sync()

    def save_state(self, entry: SpoolEntry, state: RetryState) -> None:
        # Atomic replace but no fsync: a lost update only makes the next retry come sooner.
        path = entry.path.with_suffix(".state")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
        os.replace(tmp, path)

    # -- reading ----------------------------------------------------------------------------

    def ids(self, direction: str) -> list[str]:
        """Ids of the messages in one direction, in arrival order, without opening any file."""
        try:
            with os.scandir(self.directory / direction) as it:
                return sorted(e.name[:-4] for e in it if e.name.endswith(".msg"))
        except FileNotFoundError:
            return []

    def kick(self) -> None:
        """Tell a running relay that retry state changed behind its back (``queue retry`` /
        ``delete``): it re-reads the state of the messages it is waiting on at its next poll.
        Best effort: the relay also re-reads everything on a slow timer."""
        marker = self.directory / KICK
        tmp = self.directory / "tmp" / f"kick.{secrets.token_hex(4)}"
        with contextlib.suppress(OSError):
            tmp.write_bytes(b"")
            os.replace(tmp, marker)

    def kicked_marker(self) -> tuple[int, int] | None:
        """Identity of the last kick (inode, mtime), or None if there never was one."""
        try:
            st = os.stat(self.directory / KICK)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def entries(self, direction: str) -> Iterator[SpoolEntry]:
        """Messages in arrival order. Unreadable files are skipped (and reported by `queue`)."""
        directory = self.directory / direction
        for entry_id in self.ids(direction):
            entry = self.read_entry(directory / f"{entry_id}.msg", direction)
            if entry is not None:
                yield entry

    def read_entry(self, path: Path, direction: str) -> SpoolEntry | None:
        try:
            with path.open("rb") as handle:
                if handle.read(len(MAGIC)) != MAGIC:
                    return None
                header = json.loads(handle.readline())
                size = path.stat().st_size - handle.tell()
        except (OSError, ValueError):
            return None
        return _entry(path.stem, direction, header, size, path)

    def stranded(self, direction: str) -> Iterator[SpoolEntry]:
        """Whole messages in ``slots/`` without their name in ``direction``'s folder: what a
        relay killed between a message's ``fdatasync`` and its link left (it may have been
        acknowledged). The relay links them at its next start; until then ``queue list``
        shows them from here, so a message a crash left only in its slot is listed too. (A listing
        taken while a running relay links a message may miss it for that instant: the folder was
        read before the link, ``slots/`` after it.)"""
        folder = self.directory / SLOTS
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it if is_slot_name(e.name))
        except FileNotFoundError:
            return
        for name in names:
            entry = self._stranded_entry(folder / name, direction)
            if entry is not None:
                yield entry

    def _stranded_entry(self, path: Path, direction: str) -> SpoolEntry | None:
        try:
            with path.open("rb") as handle:  # a free slot is empty: nothing to read
                magic = handle.read(len(MAGIC))
                line = handle.readline(1024 * 1024)
                if magic != MAGIC or self._queued(line):
                    return None  # not a record, or listed from its folder (the usual case)
                header = complete_record(magic + line + handle.read())
        except OSError:
            return None
        if header is None or header["dir"] != direction:
            return None
        return _entry(str(header["id"]), direction, header, int(header["len"]), path)

    def _queued(self, header_line: bytes) -> bool:
        """Whether the record whose header line this is has its queue name (then that name
        holds the same message: the slot need not be read further)."""
        try:
            header = json.loads(header_line)
            entry_id, direction = header.get("id"), header.get("dir")
        except (ValueError, AttributeError):
            return False
        return (
            _valid_id(entry_id)
            and direction in DIRECTIONS
            and (self.directory / str(direction) / f"{entry_id}.msg").exists()
        )

    def find(self, entry_id: str) -> SpoolEntry | None:
        if not entry_id or "/" in entry_id or entry_id.startswith("."):
            return None
        for direction in DIRECTIONS:
            path = self.directory / direction / f"{entry_id}.msg"
            if path.exists():
                return self.read_entry(path, direction)
        return None

    def message(self, entry: SpoolEntry) -> bytes:
        """The message of ``entry``; a record that names its length and checksum (every record
        written since slots) must match them, or :class:`SpoolDamaged` is raised: a torn or
        zero-filled record is never handed to a sink or a server."""
        with entry.path.open("rb") as handle:
            handle.read(len(MAGIC))
            line = handle.readline()
            message = handle.read()
        try:
            header = json.loads(line)
        except ValueError:
            header = None
        if _damaged(header, message):
            raise SpoolDamaged(
                f"spool file {entry.path} is damaged (length or checksum differ)",
                fix="restore it from a backup, or remove it with `smtpconn queue delete`",
            )
        return message

    def message_and_state(self, entry: SpoolEntry) -> tuple[bytes, RetryState]:
        """Both at once: one trip to a worker thread per delivery instead of two."""
        return self.message(entry), self.state(entry)

    def state(self, entry: SpoolEntry) -> RetryState:
        try:
            data = json.loads(entry.path.with_suffix(".state").read_text(encoding="utf-8"))
            return RetryState(
                attempts=int(data.get("attempts", 0)),
                next_attempt=float(data.get("next_attempt", 0.0)),
                last_error=data.get("last_error"),
                held=bool(data.get("held", False)),
                done=[str(r) for r in data.get("done", [])],
                throttled_until=float(data.get("throttled_until", 0.0)),
                # A state written before the window counted real failures only: from arrival.
                failing_since=float(
                    data.get(
                        "failing_since",
                        entry.envelope.received_at if data.get("attempts") else 0.0,
                    )
                ),
                paced_for=float(data.get("paced_for", 0.0)),
                pause_from=float(data.get("pause_from", 0.0)),
                authres=_text_or_none(data.get("authres")),
                auth=_text_or_none(data.get("auth")),
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return RetryState()
