"""The sink contract shared by every kind.

A sink either returns (the help desk has the message: the spool may forget it) or raises
:class:`SinkError`; ``permanent=True`` means retrying cannot help (the message is then *held* in
the spool for an administrator, never dropped), otherwise the spool retries with back-off.

Sinks see every message at least once and may see one twice (a crash between hand-over and
spool removal); ``SinkItem.id`` is the same on every attempt so the receiving side can de-duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from smtpconn.profile.model import SinkKind

if TYPE_CHECKING:
    from smtpconn.relay.config import RelayConfig


class SinkError(Exception):
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


class Sink(Protocol):
    kind: SinkKind

    async def deliver(self, item: SinkItem) -> None: ...


def make_sink(config: RelayConfig) -> Sink:
    kind = config.sink.kind
    if kind == SinkKind.MAILDIR:
        from smtpconn.relay.sinks.maildir import MaildirSink

        return MaildirSink(config)
    if kind == SinkKind.WEBHOOK:
        from smtpconn.relay.sinks.webhook import WebhookSink

        return WebhookSink(config)
    if kind == SinkKind.PIPE:
        from smtpconn.relay.sinks.pipe import PipeSink

        return PipeSink(config)
    from smtpconn.relay.sinks.smtp import SmtpSink

    return SmtpSink(config)
