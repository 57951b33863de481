"""The sink contract shared by every kind.

A sink either returns (the help desk has the message: the spool may forget it) or raises
:class:`SinkError`; ``permanent=True`` means retrying cannot help (the message is then *held* in
the spool for an administrator, never dropped), otherwise the spool retries with back-off.

Sinks see every message at least once and may see one twice (a crash between hand-over and
spool removal); ``SinkItem.id`` is the same on every attempt so the receiving side can de-duplicate.

A sink class checks (``problems``) and is built from its own ``[relay.sink]`` settings plus the few relay-wide values in
:class:`SinkContext`, never from the whole relay configuration; which class serves which kind is
the registry in :mod:`smtpconn.relay.sinks`, so this module knows no concrete sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from smtpconn.errors import SmtpconnFailure
from smtpconn.profile.model import SinkKind, SinkSettings


class SinkError(SmtpconnFailure):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class SinkItem:
    id: str  # the spool id: stable across retries, use it to de-duplicate
    mail_from: str
    rcpt: str
    message: bytes  # CRLF line endings, our headers on top
    meta: dict[str, Any] = field(default_factory=dict)
    # False only when this relay process spooled the message and never handed it over before:
    # then it cannot already be at the sink, and a sink may skip its duplicate check.
    maybe_delivered: bool = True

    def metadata(self) -> dict[str, Any]:
        """What webhook JSON and pipe environment carry (never a secret)."""
        return {"id": self.id, "mail_from": self.mail_from, "rcpt": self.rcpt, **self.meta}


@dataclass(frozen=True, slots=True)
class SinkContext:
    """The relay-wide values a sink may need besides its own settings."""

    hostname: str  # our name: EHLO to an smtp/lmtp server, Maildir file names
    timeout: float  # seconds for one hand-over
    base_dir: Path  # the profile's folder: file: secrets, the pipe command's working folder
    ca_file: Path | None  # trusted besides the system store (https webhook, STARTTLS)


class Sink(Protocol):
    kind: SinkKind
    # Hand-overs at once; None = the relay's default for a remote peer (a few connections).
    concurrency: ClassVar[int | None]
    # True when a hand-over with ``maybe_delivered`` finds the sink's own earlier copy by
    # ``SinkItem.id`` and adds no second one: the spool may then forget a delivered message
    # without a folder fsync (a removal lost to a power cut only repeats a harmless hand-over).
    dedupes: ClassVar[bool]

    async def deliver(self, item: SinkItem) -> None: ...


class SinkClass(Protocol):
    """What the registry loads: a class built from (settings, context)."""

    def __call__(self, settings: SinkSettings, context: SinkContext) -> Sink: ...

    # Checked before the relay starts, so a sink it could never use stops it at once.
    def problems(self, settings: SinkSettings, context: SinkContext) -> list[str]: ...
