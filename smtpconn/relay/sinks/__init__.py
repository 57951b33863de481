"""Where inbound mail goes: the help desk. One module per kind, registered in :data:`SINKS` by
``"module:Class"`` (as ``smtpconn.checks.runner.FAMILIES`` registers check families) and imported
only when that kind is used; :func:`make_sink` builds the configured one."""

from __future__ import annotations

import importlib

from smtpconn.profile.model import SinkKind, SinkSettings
from smtpconn.relay.sinks.base import Sink, SinkClass, SinkContext, SinkError, SinkItem

__all__ = [
    "SINKS",
    "Sink",
    "SinkContext",
    "SinkError",
    "SinkItem",
    "make_sink",
    "sink_class",
    "sink_problems",
]

SINKS: dict[SinkKind, str] = {
    SinkKind.MAILDIR: "smtpconn.relay.sinks.maildir:MaildirSink",
    SinkKind.WEBHOOK: "smtpconn.relay.sinks.webhook:WebhookSink",
    SinkKind.PIPE: "smtpconn.relay.sinks.pipe:PipeSink",
    SinkKind.SMTP: "smtpconn.relay.sinks.smtp:SmtpSink",
    SinkKind.LMTP: "smtpconn.relay.sinks.smtp:SmtpSink",
}


def sink_class(kind: SinkKind) -> SinkClass:
    module_name, _, class_name = SINKS[kind].partition(":")
    cls: SinkClass = getattr(importlib.import_module(module_name), class_name)
    return cls


def make_sink(settings: SinkSettings, context: SinkContext) -> Sink:
    return sink_class(settings.kind)(settings, context)


def sink_problems(settings: SinkSettings, context: SinkContext) -> list[str]:
    """What would stop the configured sink from working (``relay --check`` and start-up)."""
    return sink_class(settings.kind).problems(settings, context)
