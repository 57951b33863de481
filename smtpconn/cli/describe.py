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
        "inbound": {"username": inbound["username"]} if inbound else None,
    }
