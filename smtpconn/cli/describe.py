"""Plain-data views of profile entries, shared by ``list --json`` and ``add-address --json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smtpconn.profile.model import SupportAddress


def describe_entry(entry: SupportAddress) -> dict[str, Any]:
    """Everything about an entry a script may need, and nothing secret (no hash either): the
    profile's own fields, every table present (null when absent), and the address for people."""
    from smtpconn.profile.model import entry_to_data

    stored = entry_to_data(entry)
    inbound = stored.get("inbound")
    return {
        "address": stored["address"],
        "address_unicode": entry.address.display,
        "mode": stored["mode"],
        "workflow": stored["workflow"],
        "outbound": stored.get("outbound"),
        "dkim": stored.get("dkim"),
        "inbound": _inbound(entry) if inbound else None,
        "unauthenticated_policy": entry.unauthenticated_policy.value,
        "trusted_arc_sealers": list(entry.trusted_arc_sealers),
    }


def _inbound(entry: SupportAddress) -> dict[str, Any]:
    """The login's user name and, during a rotation, until when the old password is accepted."""
    from datetime import UTC, datetime

    assert entry.inbound is not None
    pending = entry.inbound.rotation_pending(datetime.now(UTC))
    until = entry.inbound.previous_valid_until
    return {
        "username": entry.inbound.username,
        "previous_valid_until": until.isoformat() if pending and until else None,
    }
