"""Where inbound mail goes: the help desk. One module per kind, registered in :data:`SINKS` by
``"module:Class"`` (as ``smtpconn.checks.runner.FAMILIES`` registers check families) and imported
only when that kind is used; :func:`make_sink` builds the configured one."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from smtpconn.profile.model import SinkKind
from smtpconn.relay.sinks.base import Sink, SinkClass, SinkContext, SinkError, SinkItem

if TYPE_CHECKING:
    from smtpconn.relay.config import RelayConfig

__all__ = [
    "SINKS",
    "Sink",
    "SinkContext",
    "SinkError",
    "SinkItem",
    "make_sink",
    "sink_class",
    "sink_context",
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


def sink_context(config: RelayConfig) -> SinkContext:
    return SinkContext(
        hostname=config.hostname,
        timeout=config.sink_timeout,
        base_dir=config.base_dir,
        ca_file=config.settings.ca_file,
    )


def make_sink(config: RelayConfig) -> Sink:
    return sink_class(config.sink.kind)(config.sink, sink_context(config))
