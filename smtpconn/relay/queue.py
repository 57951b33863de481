"""``smtpconn queue`` operations on the spool: list, retry now, delete.

They work beside a running relay: listing only reads; ``retry`` rewrites the advisory retry state
and replaces the spool's ``.kick`` marker (the relay notices within a second); ``delete`` removes the message file, so a delivery already
under way may still complete. Every operation is logged by the CLI, never silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtpconn.errors import UsageError
from smtpconn.relay.lanes import throttled_lanes
from smtpconn.relay.shards import spool_family
from smtpconn.relay.spool import DIRECTIONS, RetryState, Spool, SpoolEntry


@dataclass(frozen=True, slots=True)
class QueueItem:
    entry: SpoolEntry
    state: RetryState
    lane_until: float = 0.0  # its server's lane is throttled until then (lanes.json)

    @property
    def throttled_until(self) -> float | None:
        """When the message's server stops throttling, if it does now: its own last attempt
        was throttled, or it waits in a lane the relay recorded as throttled."""
        until = max(self.state.throttled_until, self.lane_until)
        return until if until > time.time() else None

    @property
    def short_id(self) -> str:
        return short_id(self.entry.id)

    def to_json(self) -> dict[str, Any]:
        e = self.entry.envelope
        s = self.state
        return {
            "id": self.entry.id,
            "short_id": self.short_id,
            "direction": e.direction,
            "mail_from": e.mail_from,
            "rcpts": list(e.rcpts),
            "delivered_to": list(s.done),
            "size": self.entry.size,
            "received_at": e.received_at,
            "attempts": s.attempts,
            "next_attempt": s.next_attempt or None,
            "status": self.status,
            "server": e.meta.get("server") or None,
            "throttled_until": _iso(self.throttled_until),
            "last_error": s.last_error,
            "tag": e.meta.get("tag"),
        }

    @property
    def status(self) -> str:
        if self.state.held:
            return "held"
        if self.throttled_until is not None:
            return "throttled"
        # A reply waiting for its lane's budget has no attempt counted, but was deferred.
        return "deferred" if self.state.attempts or self.state.last_error else "queued"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def short_id(entry_id: str) -> str:
    """The random part of a spool id (``<ns time>.<8 hex>``): what people read and type; any
    unambiguous prefix or suffix of the full id works too."""
    return entry_id.rpartition(".")[2] or entry_id


def open_spool(directory: Path) -> Spool:
    if not directory.is_dir():
        raise UsageError(
            f"no spool at {directory}",
            fix="point relay.spool in the profile at the relay's spool folder",
        )
    return Spool(directory)


def list_queue(spool: Spool, direction: str | None = None) -> list[QueueItem]:
    """The messages in ``spool`` and in its shards (``[relay] processes`` > 1)."""
    directions = DIRECTIONS if direction is None else (direction,)
    lanes = throttled_lanes(spool.directory)
    # stranded: whole messages a killed relay left in slots/ (it links them when it starts).
    return [
        QueueItem(e, part.state(e), _lane_until(lanes, e))
        for d in directions
        for part in spool_family(spool)
        for e in (*part.entries(d), *part.stranded(d))
    ]


def _owner(family: list[Spool], entry: SpoolEntry) -> Spool:
    """The spool (main or shard) whose folders hold ``entry``."""
    folder = entry.path.parent.parent
    return next((part for part in family if part.directory == folder), family[0])


def _lane_until(lanes: dict[str, dict[str, Any]], entry: SpoolEntry) -> float:
    lane = lanes.get(str(entry.envelope.meta.get("server") or "")) if lanes else None
    until = lane.get("throttled_until") if lane else None
    return float(until) if isinstance(until, int | float) else 0.0


def lanes_report(spool: Spool) -> list[dict[str, Any]]:
    """The lanes the relay last recorded as throttled, for ``queue list`` and ``status``."""
    return [
        {
            "server": key,
            "throttled_until": _iso(float(item["throttled_until"])),
            "reason": item.get("reason"),
            "recipients_24h": item.get("recipients_24h"),
        }
        for key, item in sorted(throttled_lanes(spool.directory).items())
    ]


def _select(spool: Spool, ids: list[str], everything: bool) -> list[SpoolEntry]:
    if everything:
        return [item.entry for item in list_queue(spool)]
    if not ids:
        raise UsageError("give one or more message ids, or everything", fix="list them first")
    known: list[SpoolEntry] | None = None
    entries = []
    family = spool_family(spool)
    for entry_id in ids:
        entry = next((e for part in family if (e := part.find(entry_id)) is not None), None)
        if entry is None:
            if known is None:
                known = [item.entry for item in list_queue(spool)]
            entry = _match(known, entry_id, spool.directory)
        if entry not in entries:
            entries.append(entry)
    return entries


def _match(known: list[SpoolEntry], wanted: str, directory: Path) -> SpoolEntry:
    """A short id: an unambiguous prefix or suffix of exactly one message's id."""
    text = wanted.strip()
    found = (
        [e for e in known if e.id.startswith(text) or e.id.endswith(text)] if len(text) >= 4 else []
    )
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UsageError(
            f"{wanted!r} matches {len(found)} messages (nothing was changed)",
            fix="give more of the id (smtpconn queue list -v shows full ids)",
        )
    raise UsageError(
        f"no message {wanted!r} in {directory} (nothing was changed)",
        fix="smtpconn queue list shows the ids; the message may already be delivered",
    )


def retry(spool: Spool, ids: list[str], *, everything: bool = False) -> list[str]:
    """Make messages due now (held ones too). Returns the ids touched."""
    entries = _select(spool, ids, everything)
    _act(spool, entries, _make_due)
    return [e.id for e in entries]


def _make_due(spool: Spool, entry: SpoolEntry) -> None:
    state = spool.state(entry)
    state.held = False
    state.next_attempt = time.time()
    spool.save_state(entry, state)


def _remove(spool: Spool, entry: SpoolEntry) -> None:
    spool.remove(entry)


def _act(
    spool: Spool, entries: list[SpoolEntry], action: Callable[[Spool, SpoolEntry], None]
) -> None:
    """``action`` on each entry through the spool (main or shard) holding it, then a kick of
    each spool touched: the process working on it looks again."""
    family = spool_family(spool)
    touched: list[Spool] = []
    for entry in entries:
        owner = _owner(family, entry)
        action(owner, entry)
        if owner not in touched:
            touched.append(owner)
    for owner in touched:
        owner.kick()


def delete(spool: Spool, ids: list[str], *, everything: bool = False) -> list[str]:
    entries = _select(spool, ids, everything)
    _act(spool, entries, _remove)
    return [e.id for e in entries]
