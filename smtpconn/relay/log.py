"""Structured, greppable relay logs: one line per event, ``key=value`` pairs.

``event=inbound.accepted id=… client=203.0.113.5 auth=customer-relay tag=authenticated …``.
Values with spaces or quotes are double-quoted with escapes, so ``grep 'event=outbound.bounced'``
and ``awk`` work. Every control character in a value (CR, LF, ESC, NUL, DEL, C1 …) is written as
an escape (``\r``, ``\x1b``), whatever the field: a client's EHLO name, login or address, or a
remote server's error text, can neither start a log line of its own nor drive a terminal.
Secrets are never passed here: callers log user names, never passwords.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from smtpconn.message.escaping import escape_controls

LOGGER = logging.getLogger("smtpconn.relay")
# Longest value a field keeps: a remote server's reply with the reply-code catalogue's cause and
# fix fits; a client cannot flood the log through one field.
MAX_VALUE = 700
_PLAIN = re.compile(r"[A-Za-z0-9_.,:@/+\-\[\]<>=]+")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:.3f}"
    text = str(value)[:MAX_VALUE]
    if text and _PLAIN.fullmatch(text):
        return text
    # Quote first, then escape controls: a client's literal backslash shows as \\ and a control
    # character as \xNN (or \r \n \t), never raw, so no value can forge or split a log line.
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escape_controls(quoted) + '"'


def format_event(event: str, fields: dict[str, Any]) -> str:
    parts = [f"event={event}"]
    parts += [f"{key}={_value(value)}" for key, value in fields.items()]
    return " ".join(parts)


# Called with every event and its fields whatever the log level: what the relay counts (the status
# file, metrics) must not depend on how verbose its log is.
Observer = Callable[[str, dict[str, Any]], None]
OBSERVERS: list[Observer] = []
# A session opened in a shard child: an observer-only event for the main's metrics.
SESSION_OPENED_EVENT = "relay.session-opened"
# Fields every line of this process ends with (with several relay processes: which one it is).
CONTEXT: dict[str, Any] = {}


def notify_observers(event: str, **fields: Any) -> None:
    """``event`` for the observers only (counted, never a log line): what happens too often to
    log, such as a session opening in a shard child, which the main's metrics count."""
    for observer in OBSERVERS:
        try:
            observer(event, fields)
        except Exception as exc:  # counting must never stop the delivery that is being logged
            LOGGER.error("%s", format_event("relay.observer-failed", {"error": repr(exc)}))


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    notify_observers(event, **fields)
    # The event and its fields travel with the record too, for handlers that keep structure
    # (JSON lines) instead of parsing the line back.
    if CONTEXT:  # (an event's own field of the same name wins)
        fields = {**fields, **{k: v for k, v in CONTEXT.items() if k not in fields}}
    LOGGER.log(
        level,
        "%s",
        format_event(event, fields),
        extra={EVENT_ATTR: event, FIELDS_ATTR: fields},
    )


EVENT_ATTR = "smtpconn_event"
FIELDS_ATTR = "smtpconn_fields"


def event_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]] | None:
    """The (event, fields) a record of :func:`log_event` carries, or None for other records."""
    event = getattr(record, EVENT_ATTR, None)
    fields = getattr(record, FIELDS_ATTR, None)
    if isinstance(event, str) and isinstance(fields, dict):
        return event, fields
    return None


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"ts={stamp}Z level={record.levelname.lower()} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the fields of the key=value line: ``ts``, ``level``,
    ``event`` and the event's own fields (JSON escapes every control character, so a value can
    no more split a line here than there). A record that is not an event has ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        document: dict[str, Any] = {"ts": f"{stamp}Z", "level": record.levelname.lower()}
        found = event_of(record)
        if found is None:
            document["message"] = record.getMessage()
        else:
            document["event"] = found[0]
            for key, value in found[1].items():
                # An event field never takes the place of ts, level or event.
                name = key if key not in document else f"field_{key}"
                document[name] = _json_value(value)
        return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return round(value, 3)
    return str(value)[:MAX_VALUE]


class LogFormat(StrEnum):
    KEY_VALUE = "key-value"
    JSON = "json"


def configure_logging(verbose: bool = False, log_format: LogFormat = LogFormat.KEY_VALUE) -> None:
    """Send relay events to stderr as key=value lines (or JSON lines); systemd's journal keeps
    them."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else KeyValueFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    LOGGER.propagate = False
    # aiosmtpd logs every peer at INFO, including data we already log in our own form.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
