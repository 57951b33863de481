"""``smtpconn status``: per support address, what the relay last did for it and what waits.

Built from three things that exist whether the relay runs or not: the profile (the addresses,
their logins), the spool (queued and held messages, by the address in their envelope) and the
status file the relay writes (``relay.state``). An address is *failing* when its last error is
newer than its last success.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smtpconn.relay.config import RelayConfig
from smtpconn.relay.queue import lanes_report, list_queue
from smtpconn.relay.reload import running_pid, spool_in_use
from smtpconn.relay.spool import Spool
from smtpconn.relay.state import STATUS_FILE, SUCCESS_KEYS, read_status


@dataclass(frozen=True, slots=True)
class StatusReport:
    addresses: list[dict[str, Any]]
    relay: dict[str, Any]

    @property
    def failing(self) -> list[str]:
        return [a["address"] for a in self.addresses if a["failing"]]

    def to_json(self) -> dict[str, Any]:
        return {"relay": self.relay, "addresses": self.addresses}


def status_report(config: RelayConfig, now: float | None = None) -> StatusReport:
    now = time.time() if now is None else now
    spool_dir = config.spool_dir
    recorded = read_status(spool_dir / STATUS_FILE)
    waiting = _waiting(config, now)
    lanes = lanes_report(Spool(spool_dir)) if spool_dir.is_dir() else []
    throttled = {lane["server"]: lane for lane in lanes}
    addresses = []
    for entry in config.profile.addresses:
        key = entry.address.ascii
        seen: dict[str, Any] = recorded.get("addresses", {}).get(key, {})
        if not isinstance(seen, dict):
            seen = {}
        addresses.append(
            {
                "address": key,
                "mode": entry.mode.value,
                **{name: _number(seen.get(name)) for name in SUCCESS_KEYS},
                "last_error": seen.get("last_error")
                if isinstance(seen.get("last_error"), dict)
                else None,
                **waiting.get(key, {"queued": 0, "held": 0, "oldest_queued_age": None}),
                "inbound_rotation_until": _rotation(entry, now),
                "inbound_credential_age": _credential_age(entry, now),
                "token_expires": _iso(seen.get("token_expires")),
                "throttled_until": _throttled_until(entry, throttled),
                "failing": _failing(seen),
            }
        )
    running = spool_dir.is_dir() and spool_in_use(spool_dir)
    relay = {
        "running": running,
        "pid": running_pid(spool_dir) if running else None,
        "spool": str(spool_dir),
        "status_updated": _number(recorded.get("updated")),
        "lanes": lanes,
    }
    return StatusReport(addresses, relay)


def _throttled_until(entry: Any, throttled: dict[str, dict[str, Any]]) -> str | None:
    """When the address's outbound server stops throttling the relay (its lane), if it does."""
    lane = throttled.get(entry.outbound.lane) if entry.outbound is not None else None
    return None if lane is None else str(lane["throttled_until"])


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _iso(value: Any) -> str | None:
    number = _number(value)
    return (
        None
        if number is None
        else datetime.fromtimestamp(number, UTC).isoformat(timespec="seconds")
    )


def _failing(seen: dict[str, Any]) -> bool:
    error = seen.get("last_error")
    if not isinstance(error, dict) or _number(error.get("time")) is None:
        return False
    successes = [t for name in SUCCESS_KEYS if (t := _number(seen.get(name))) is not None]
    return not successes or float(error["time"]) > max(successes)


def _rotation(entry: Any, now: float) -> str | None:
    inbound = entry.inbound
    if inbound is None or not inbound.rotation_pending(datetime.fromtimestamp(now, UTC)):
        return None
    return str(inbound.previous_valid_until.isoformat())


def _credential_age(entry: Any, now: float) -> float | None:
    """Seconds since the inbound password was made (None: no login, or made before smtpconn
    recorded it)."""
    issued = entry.inbound.issued_at if entry.inbound is not None else None
    return None if issued is None else max(0.0, now - issued.timestamp())


def _waiting(config: RelayConfig, now: float) -> dict[str, dict[str, Any]]:
    """Per support address: messages queued (held ones included), held, the oldest one's age."""
    if not config.spool_dir.is_dir():
        return {}
    found: dict[str, dict[str, Any]] = {}
    for item in list_queue(Spool(config.spool_dir)):
        address = item.entry.envelope.meta.get("support_address")
        route = config.route_for(str(address or ""))
        if route is None:
            continue
        slot = found.setdefault(
            route.address.address.ascii, {"queued": 0, "held": 0, "oldest_queued_age": None}
        )
        slot["queued"] += 1
        slot["held"] += int(item.state.held)
        age = max(0.0, now - item.entry.envelope.received_at)
        slot["oldest_queued_age"] = max(age, slot["oldest_queued_age"] or 0.0)
    return found
