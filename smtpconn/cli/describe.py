"""Plain-data views of profile entries, shared by ``list --json`` and ``add-address --json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smtpconn.profile.model import SupportAddress


def describe_entry(entry: SupportAddress) -> dict[str, Any]:
    """Everything about an entry a script may need, and nothing secret (no hash either)."""
    data: dict[str, Any] = {
        "address": entry.address.ascii,
        "address_unicode": entry.address.display,
        "mode": entry.mode.value,
        "workflow": entry.workflow.value,
        "outbound": None,
        "dkim": None,
        "inbound": None,
    }
    if entry.outbound is not None:
        o = entry.outbound
        data["outbound"] = {
            "host": o.host,
            "port": o.port,
            "security": o.security.value,
            "auth": o.auth.value,
            "username": o.username,
            "secret": str(o.secret),
        }
    if entry.dkim is not None:
        data["dkim"] = {"selector": entry.dkim.selector, "private_key": str(entry.dkim.private_key)}
    if entry.inbound is not None:
        data["inbound"] = {"username": entry.inbound.username}
    return data
