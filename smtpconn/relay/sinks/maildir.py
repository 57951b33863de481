"""Maildir sink (the default): the help desk (or Dovecot, or a fetcher) reads ``new/``.

Each message is written to ``tmp/``, fsync'ed, renamed into ``new/`` and ``new/`` is fsync'ed
(one fsync shared by the hand-overs that finish together), so a reader never sees half a message
and a delivered message survives a crash. The relay has that done by its delivery agent, a child
process (:mod:`smtpconn.relay.agent`), which also removes the spool entry afterwards; a copy
the agent cannot take (none running yet, a retry, a message over 4 MiB) is written by a worker
thread, the same way. The file name is
the spool id plus our host name, so a redelivery after a crash finds the first copy (in ``new/``
or, already read, in ``cur/``) and does not create a duplicate. ``Return-Path`` and
``Delivered-To`` are added on top, as a local delivery agent does, with the envelope addresses
escaped (:func:`~smtpconn.relay.tagging.safe_address`): whatever the listener let through, no
sender can add a header line of its own there. Line endings become LF.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import ClassVar, Protocol

from smtpconn.durable import SharedDirSync, publish, write_and_sync
from smtpconn.profile.model import SinkKind, SinkSettings
from smtpconn.relay.folders import unwritable_dir
from smtpconn.relay.sinks.agent_client import AgentGone, DeliveryAgent
from smtpconn.relay.sinks.base import SinkContext, SinkError, SinkItem
from smtpconn.relay.tagging import return_path, safe_address


class SpoolRemoval(Protocol):
    """What to do once the copy is durable: remove the message's spool entry."""

    def __call__(self) -> None:
        """Remove it (in the worker thread that made the copy); keeps an error for the loop."""

    def names(self) -> list[Path] | None:
        """The names to unlink, for the agent to remove; None when only a call can do it."""

    def failed(self, error: OSError) -> None:
        """The agent could not unlink one of :meth:`names`."""


def ensure_maildir(root: Path) -> None:
    for name in ("tmp", "new", "cur"):
        (root / name).mkdir(mode=0o700, parents=True, exist_ok=True)


class MaildirSink:
    kind = SinkKind.MAILDIR
    # Remote sinks get few parallel hand-overs, as any MTA would; a local Maildir is only disk
    # work, and with few slots it became the relay's bottleneck behind a fast listener
    # (benchmarks/README.md).
    concurrency: ClassVar[int | None] = 16
    dedupes: ClassVar[bool] = True  # _delivered_before: the same file name in new/ or cur/

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        assert settings.path is not None
        self.root = Path(settings.path)
        self.hostname = context.hostname.replace("/", "_").replace(":", "_")
        self._ready = False  # tmp/new/cur exist (checked once; recreated if delivery fails)
        # Hand-overs finishing together (one per worker thread) share one fsync of new/.
        self._new_synced = SharedDirSync(self.root / "new")
        self.agent = DeliveryAgent()

    @staticmethod
    def problems(settings: SinkSettings, context: SinkContext) -> list[str]:
        if settings.path and (problem := unwritable_dir(Path(settings.path))):
            return [f"relay.sink.path {settings.path}: {problem}"]
        return []

    def _delivered_before(self, base: str) -> bool:
        # Listing cur/ costs as much as the help desk keeps there, so it is only done for
        # messages that may have been handed over before (a retry, or found at start-up).
        if (self.root / "new" / base).exists():
            return True
        prefix = base + ":"
        with os.scandir(self.root / "cur") as entries:
            return any(e.name.startswith(prefix) for e in entries)

    async def deliver(self, item: SinkItem, then: SpoolRemoval | None = None) -> None:
        """Write ``item`` durably; then (not if the delivery failed) ``then`` removes the spool
        entry: through the agent when it can take the copy, else in the same worker thread."""
        if then is not None and not item.maybe_delivered and self.agent.usable() and self._ready:
            names = then.names()
            data = self._file_data(item)
            if names is not None and len(data) <= self.agent.max_body:
                base = self._base(item)
                try:
                    error, removal_error = await self.agent.deliver(
                        self.root / "tmp" / base, self.root / "new" / base, data, names
                    )
                except AgentGone:
                    # It may have made the copy before it exited: look before writing again.
                    item = dataclasses.replace(item, maybe_delivered=True)
                else:
                    if error is not None:
                        self._ready = False  # recreate the folders on the next attempt
                        raise SinkError(f"maildir {self.root}: {error}")
                    if removal_error is not None:
                        then.failed(removal_error)
                    return
        await asyncio.to_thread(self._deliver_then, item, then)

    async def aclose(self) -> None:
        await self.agent.aclose()

    def _deliver_then(self, item: SinkItem, then: SpoolRemoval | None) -> None:
        self._deliver(item)
        if then is not None:
            then()

    def _base(self, item: SinkItem) -> str:
        return f"{item.id}.{self.hostname}"

    @staticmethod
    def _file_data(item: SinkItem) -> bytes:
        head = f"{return_path(item.mail_from)}\r\nDelivered-To: {safe_address(item.rcpt)}\r\n"
        return (head.encode() + item.message).replace(b"\r\n", b"\n")

    def _deliver(self, item: SinkItem) -> None:
        base = self._base(item)
        try:
            if not self._ready:
                ensure_maildir(self.root)
                self._ready = True
            if item.maybe_delivered and self._delivered_before(base):
                return  # delivered before a crash; the spool just did not know yet
            data = self._file_data(item)
            tmp = self.root / "tmp" / base
            # A write that fails leaves its partial file: the retry truncates it (same name).
            write_and_sync(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), data)
            publish(tmp, self.root / "new" / base, self._new_synced)
        except OSError as exc:
            self._ready = False  # someone may have removed the folders: recreate them next time
            # A full disk or a permission problem can be fixed; keep retrying.
            raise SinkError(f"maildir {self.root}: {exc.strerror}") from None
