"""Outbound delivery lanes: one per customer server (``host:port``), each with that server's
sending limits (``[addresses.outbound.limits]``; addresses sharing a server share its lane).

A lane decides when the next reply for its server may start: no more deliveries at once than
``max_connections`` (else :data:`DEFAULT_LANE_CONCURRENCY`), no more transactions in a rolling
minute than ``messages_per_minute``, no more recipients in a rolling 24 hours than
``recipients_per_day``. A transaction's recipients are *reserved* when it starts (they count
in the budget while it is under way, so ``max_connections`` deliveries cannot each pass the
check together and overshoot it) and settled when it ends: the accepted ones become the day's
sent recipients, the refused ones are freed. A throttling reply (``smtpconn.smtp.reply_catalogue.is_throttling``) stops the lane with
exponential back-off (``retry_initial`` doubling, capped at an hour) and drops its concurrency
to one, which then grows back by one per delivered message: a throttled server is eased back
into, not hit again with everything that waited. Other lanes are untouched; the queue worker
skips a lane that may not start and serves the others.

What the lanes know is in memory, and written to ``<spool>/lanes.json`` (advisory, like the
retry state) so that ``smtpconn queue list`` and ``status`` can say "throttled until …" and a
restart keeps the day's recipient count and a running back-off. A lane whose server left the
profile is dropped from it once it holds nothing a budget or a back-off still needs.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpconn.durable import write_atomically
from smtpconn.profile.keys import declared_keys
from smtpconn.profile.model import SendingLimits, lane_limits
from smtpconn.relay.config import RETRY_CAP, RelayConfig
from smtpconn.relay.spool import SpoolEntry, backoff_delay

LANES_FILE = "lanes.json"
LANES_VERSION = 1
DEFAULT_LANE_CONCURRENCY = 4  # per server, without max_connections (the old global value)
NO_LANE = "-"  # a reply whose sender has no outbound server any more (it bounces)
_MINUTE = 60.0
_DAY = 86400.0


@dataclass(slots=True)
class Lane:
    key: str
    limits: SendingLimits = field(default_factory=SendingLimits)
    in_flight: int = 0
    window: int | None = None  # concurrency allowed since the last throttle; None: the limit
    throttled_until: float = 0.0
    throttles: int = 0  # throttles in a row: the back-off's exponent
    reason: str = ""
    starts: deque[float] = field(default_factory=deque)  # transactions of the last minute
    sent: deque[tuple[float, int]] = field(default_factory=deque)  # (time, recipients), 24 h
    # Recipients of transactions under way, by the message sending them (one at a time each)
    reserved: dict[str, int] = field(default_factory=dict)

    @property
    def concurrency(self) -> int:
        limit = self.limits.max_connections or DEFAULT_LANE_CONCURRENCY
        return limit if self.window is None else max(1, min(limit, self.window))

    def _expire(self, now: float) -> None:
        while self.starts and self.starts[0] <= now - _MINUTE:
            self.starts.popleft()
        while self.sent and self.sent[0][0] <= now - _DAY:
            self.sent.popleft()

    def sent_today(self, now: float) -> int:
        self._expire(now)
        return sum(n for _t, n in self.sent)

    def transaction_size(self, recipients: int) -> int:
        """Recipients of the next transaction of a message that still has ``recipients``."""
        per_message = self.limits.recipients_per_message
        return min(recipients, per_message) if per_message else recipients

    @property
    def idle(self) -> bool:
        return not self.in_flight and not self.reserved

    def pace(self, now: float, recipients: int) -> float:
        """Seconds until one more transaction of ``recipients`` may start (0: now)."""
        self._expire(now)
        waits = [self.throttled_until - now]
        per_minute = self.limits.messages_per_minute
        if per_minute and len(self.starts) >= per_minute:
            waits.append(self.starts[len(self.starts) - per_minute] + _MINUTE - now)
        per_day = self.limits.recipients_per_day
        if per_day:
            waits.append(self._day_wait(now, min(recipients, per_day), per_day))
        return max(0.0, *waits)

    def _day_wait(self, now: float, wanted: int, per_day: int) -> float:
        """When enough of the last 24 hours' recipients have aged out to send ``wanted`` more;
        ``inf`` while only transactions under way can free enough (their end tells)."""
        excess = sum(n for _t, n in self.sent) + sum(self.reserved.values()) + wanted - per_day
        if excess <= 0:
            return 0.0
        for sent_at, count in self.sent:
            excess -= count
            if excess <= 0:
                return sent_at + _DAY - now
        return math.inf

    def wait(self, now: float, recipients: int) -> float:
        """Seconds until a new delivery may start; ``inf`` while every slot is taken."""
        if self.in_flight >= self.concurrency:
            return math.inf
        return self.pace(now, recipients)

    def started(self, now: float, owner: str = "", recipients: int = 0) -> None:
        """A delivery starts, with its first transaction (checked by :meth:`wait` just before,
        on the same turn of the event loop: nothing else can take the budget in between)."""
        self.in_flight += 1
        self.reserve(now, owner, recipients)

    def reserve(self, now: float, owner: str, recipients: int) -> None:
        """A transaction of ``owner`` (a message) starts: it takes a slot of the minute and
        holds its recipients in the day's budget until :meth:`settle`."""
        self.starts.append(now)
        self.reserved[owner] = recipients

    def claim(self, now: float, owner: str, recipients: int) -> float:
        """Reserve a transaction of ``recipients`` for ``owner`` if the limits allow it now
        (returns 0), else the seconds to wait (``inf``: until a transaction under way ends).
        A reservation the worker made for ``owner`` at launch is used, not taken twice."""
        held = self.reserved.pop(owner, None)
        if held is not None and held >= recipients:
            self.reserved[owner] = recipients
            return 0.0
        wait = self.pace(now, recipients)
        if wait <= 0:
            self.reserve(now, owner, recipients)
        return wait

    def settle(self, now: float, owner: str, accepted: int) -> None:
        """``owner``'s transaction ended: its accepted recipients are spent, the rest freed."""
        self.reserved.pop(owner, None)
        if accepted:
            self.sent.append((now, accepted))

    def finished(self, owner: str = "") -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.reserved.pop(owner, None)  # a delivery that ended early frees what it held

    def delivered(self, now: float, recipients: int, owner: str = "") -> None:
        """A transaction got recipients through: settled, and the lane eases back in."""
        self.settle(now, owner, recipients)
        self.throttles = 0
        if self.window is not None:
            self.window += 1
            if self.window >= (self.limits.max_connections or DEFAULT_LANE_CONCURRENCY):
                self.window = None

    def throttle(self, now: float, reason: str, initial: float) -> float:
        """The server asked us to slow down: stop the lane for a back-off, one at a time after
        it. Replies of deliveries that were already under way count once, not once each."""
        if now >= self.throttled_until:
            self.throttles += 1
            self.throttled_until = now + backoff_delay(self.throttles, initial, RETRY_CAP)
        self.window = 1
        self.reason = reason[:300]
        return self.throttled_until

    def to_json(self, now: float) -> dict[str, Any]:
        limits = {k.name: getattr(self.limits, k.name) for k in declared_keys(SendingLimits)}
        return {
            "server": self.key,
            "throttled_until": self.throttled_until if self.throttled_until > now else None,
            "reason": self.reason if self.throttled_until > now else None,
            "throttles": self.throttles,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "recipients_24h": self.sent_today(now),
            "recipients_in_flight": sum(self.reserved.values()),
            "sent": [[t, n] for t, n in self.sent],
            "limits": {k: v for k, v in limits.items() if v is not None},
        }


class Lanes:
    """Every lane of the outbound direction, found by a reply's sender in the current profile."""

    def __init__(self, config: Callable[[], RelayConfig], path: Path | None = None) -> None:
        self.config = config
        self.path = path
        self._lanes: dict[str, Lane] = {}
        self._limits_of: tuple[int, dict[str, SendingLimits]] | None = None
        self._dirty = False
        if path is not None:
            self._restore(read_lanes(path))

    def _server_limits(self) -> dict[str, SendingLimits]:
        config = self.config()
        if self._limits_of is None or self._limits_of[0] != id(config.profile):
            grouped: dict[str, list[SendingLimits]] = {}
            for entry in config.profile.addresses:
                if entry.outbound is not None:
                    grouped.setdefault(entry.outbound.lane, []).append(entry.outbound.limits)
            self._limits_of = (
                id(config.profile),
                {key: lane_limits(items) for key, items in grouped.items()},
            )
        return self._limits_of[1]

    def key_of(self, entry: SpoolEntry) -> str:
        support = self.config().sender_address(entry.envelope.mail_from)
        if support is None or support.outbound is None:
            return NO_LANE
        return support.outbound.lane

    def lane(self, key: str) -> Lane:
        """The lane of ``key`` with the current profile's limits (a reload applies at once)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key)
        lane.limits = self._server_limits().get(key, SendingLimits())
        return lane

    def lane_for(self, entry: SpoolEntry) -> Lane:
        return self.lane(self.key_of(entry))

    def changed(self) -> None:
        self._dirty = True

    def throttled(self, now: float | None = None) -> list[Lane]:
        now = time.time() if now is None else now
        return [lane for lane in self._lanes.values() if lane.throttled_until > now]

    def prune(self, now: float | None = None) -> list[str]:
        """Forget the lanes of servers the profile no longer has (after a reload) once nothing
        of theirs matters: no delivery under way, no throttle running, no recipient in the last
        24 hours (a server put back the same day keeps its count). Returns their keys."""
        now = time.time() if now is None else now
        servers = self._server_limits()
        gone = [
            key
            for key, lane in self._lanes.items()
            if key not in servers
            and lane.idle
            and lane.throttled_until <= now
            and not lane.sent_today(now)
        ]
        for key in gone:
            del self._lanes[key]
        self._dirty = self._dirty or bool(gone)
        return gone

    # -- the file -------------------------------------------------------------------------------

    def _restore(self, document: dict[str, Any]) -> None:
        now = time.time()
        for key, item in document.get("lanes", {}).items():
            if not isinstance(item, dict):
                continue
            lane = self._lanes[key] = Lane(key)
            lane.throttled_until = _number(item.get("throttled_until"))
            lane.throttles = int(_number(item.get("throttles")))
            lane.reason = str(item.get("reason") or "")
            if lane.throttled_until > now:
                lane.window = 1
            for pair in item.get("sent", []):
                if isinstance(pair, list) and len(pair) == 2:
                    lane.sent.append((_number(pair[0]), int(_number(pair[1]))))

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "version": LANES_VERSION,
            "updated": now,
            "lanes": {key: lane.to_json(now) for key, lane in self._lanes.items()},
        }

    def dump(self, *, force: bool = False) -> bytes | None:
        """The file's new content when something changed (on the event loop: the lanes are
        only touched there); the caller writes it with :meth:`write`, off the loop."""
        if self.path is None:
            return None
        self.prune()
        if not (self._dirty or force):
            return None
        self._dirty = False
        return json.dumps(self.snapshot(), indent=1).encode()

    def write(self, document: bytes) -> None:
        assert self.path is not None
        write_atomically(self.path, document, mode=0o600)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def read_lanes(path: Path) -> dict[str, Any]:
    """The lanes file's content; empty when missing or unreadable (it is advisory)."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("version") != LANES_VERSION:
        return {}
    if not isinstance(document.get("lanes"), dict):
        document["lanes"] = {}
    return document


def throttled_lanes(spool_dir: Path, now: float | None = None) -> dict[str, dict[str, Any]]:
    """The lanes a relay last recorded as throttled (server -> its record), for the CLI."""
    now = time.time() if now is None else now
    found: dict[str, dict[str, Any]] = {}
    for key, item in read_lanes(spool_dir / LANES_FILE).get("lanes", {}).items():
        if isinstance(item, dict) and _number(item.get("throttled_until")) > now:
            found[key] = item
    return found
