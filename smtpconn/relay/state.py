"""The relay's status file: per support address, when mail last arrived and went out and the
last error, written atomically to ``<spool>/status.json`` so ``smtpconn status`` can read it
whether the relay runs or not.

The recorder observes the relay's log events (``relay.log.OBSERVERS``): every event already says
what happened, so nothing else in the relay has to know the file exists. It keeps the
state in memory and the relay writes it at most once a second (and once more when it stops),
so a busy relay does not pay an fsync per message; the file is advisory, like the retry state.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtpconn.durable import write_atomically
from smtpconn.relay.shards import find_anywhere

if TYPE_CHECKING:
    from smtpconn.relay.config import RelayConfig
    from smtpconn.relay.spool import Spool

STATUS_FILE = "status.json"
STATUS_VERSION = 1
# The stage an error text names, first match wins; otherwise the event's side (outbound, sink).
# The delivery code reports errors as text, so the status file reads the stage back from it.
_STAGES = (
    (
        "connect",
        re.compile(
            r"\bconnect stage:|refused the connection|could not connect|"
            r"timed out connecting|cannot resolve|no address",
            re.I,
        ),
    ),
    ("tls", re.compile(r"\btls stage:|starttls|certificate|\bTLS\b", re.I)),
    ("auth", re.compile(r"\bauth stage:|authentication|\bAUTH\b", re.I)),
)
_MAX_REPLY = 500
_ID_CACHE = 10_000

# event -> the per-address timestamp it sets
_SUCCESSES = {
    "inbound.accepted": "last_inbound_accepted",
    "inbound.delivered": "last_inbound_delivered",
    "outbound.delivered": "last_outbound_delivered",
}
_SUBMITTED = "submission.accepted"  # a reply spooled: its id and sender (the support address)
_ERRORS = {
    "inbound.deferred": "sink",
    "inbound.held": "sink",
    "outbound.deferred": "outbound",
    "outbound.bounced": "outbound",
}
SUCCESS_KEYS = tuple(_SUCCESSES.values())
# Logged by the outbound delivery whenever it obtains or refreshes an OAuth token:
# address=<support address> expires=<ISO time>.
TOKEN_EVENT = "oauth.token"

# The support address an event is about: from its rcpt / mail_from when it has one, else from
# the spool entry its id names.
AddressOf = Callable[[str, dict[str, Any]], str | None]


class StatusRecorder:
    def __init__(self, path: Path, address_of: AddressOf) -> None:
        self.path = path
        self.address_of = address_of
        self._lock = threading.Lock()
        self._addresses: dict[str, dict[str, Any]] = read_status(path).get("addresses", {})
        self._ids: dict[str, str] = {}
        self._dirty = True  # the first flush says this relay runs (pid, started)
        self.started = time.time()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event == TOKEN_EVENT:
            self._token(fields)
            return
        if event == _SUBMITTED:
            # Names the reply's address from the profile now, so that its delivery event
            # finds it in ``_ids`` instead of reading the spool entry on the event loop.
            self._address(event, fields)
            return
        if event not in _SUCCESSES and event not in _ERRORS:
            return
        address = self._address(event, fields)
        if address is None:
            return
        with self._lock:
            slot = self._addresses.setdefault(address, {})
            now = time.time()
            if event in _SUCCESSES:
                slot[_SUCCESSES[event]] = now
            else:
                slot["last_error"] = _error(event, fields, now)
            self._dirty = True

    def _token(self, fields: dict[str, Any]) -> None:
        address, expires = token_expiry(fields)
        if address is None or expires is None:
            return
        with self._lock:
            self._addresses.setdefault(address, {})["token_expires"] = expires
            self._dirty = True

    def _address(self, event: str, fields: dict[str, Any]) -> str | None:
        entry_id = str(fields.get("id") or "")
        known = self._ids.get(entry_id)
        if known is not None:
            return known
        address = self.address_of(event, fields)
        if address is not None and entry_id:
            if len(self._ids) >= _ID_CACHE:
                self._ids.clear()
            self._ids[entry_id] = address
        return address

    def flush_file(self, *, running: bool = True) -> None:
        """Write the file if anything changed (``running=False``: the relay is stopping)."""
        import os

        with self._lock:
            if not self._dirty and running:
                return
            document = {
                "version": STATUS_VERSION,
                "updated": time.time(),
                "relay": {"pid": os.getpid() if running else None, "started": self.started},
                "addresses": json.loads(json.dumps(self._addresses)),
            }
            self._dirty = False
        write_atomically(self.path, json.dumps(document, indent=1).encode(), mode=0o600)


def _error(event: str, fields: dict[str, Any], now: float) -> dict[str, Any]:
    text = str(fields.get("error") or fields.get("reason") or "")
    stage = next((name for name, pattern in _STAGES if pattern.search(text)), _ERRORS[event])
    return {
        "time": now,
        "event": event,
        "stage": stage,
        "reply": text[:_MAX_REPLY],
    }


def token_expiry(fields: dict[str, Any]) -> tuple[str | None, float | None]:
    """The support address and expiry (Unix seconds) an ``oauth.token`` event names."""
    address = str(fields.get("address") or "") or None
    try:
        expires = datetime.fromisoformat(str(fields.get("expires"))).timestamp()
    except ValueError:
        expires = None
    return address, expires


def read_status(path: Path) -> dict[str, Any]:
    """The status file's content; empty when it is missing or unreadable (it is advisory)."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("version") != STATUS_VERSION:
        return {}
    if not isinstance(document.get("addresses"), dict):
        document["addresses"] = {}
    return document


def spool_address_of(spool: Spool, config: Callable[[], RelayConfig]) -> AddressOf:
    """Resolves an event's support address: an accepted copy by its recipient (as the current
    profile spells the address), anything else by the spool entry its id names."""

    def address_of(event: str, fields: dict[str, Any]) -> str | None:
        if event in ("inbound.accepted", _SUBMITTED):
            named = fields.get("rcpt") if event == "inbound.accepted" else fields.get("mail_from")
            route = config().route_for(str(named or ""))
            return route.address.address.ascii if route is not None else None
        entry = find_anywhere(spool, str(fields.get("id") or ""))
        if entry is None:
            return None
        address = entry.envelope.meta.get("support_address")
        return str(address) if address else None

    return address_of
