"""Where inbound mail goes: the help desk. One module per kind; :func:`make_sink` picks one."""

from __future__ import annotations

from smtpconn.relay.sinks.base import Sink, SinkError, SinkItem, make_sink

__all__ = ["Sink", "SinkError", "SinkItem", "make_sink"]
