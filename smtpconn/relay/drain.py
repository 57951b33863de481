"""What the spool still holds for one support address: ``remove-address`` refuses while there is
any (or waits for it with ``--drain``, or says what it leaves with ``--force``)."""

from __future__ import annotations

from pathlib import Path

from smtpconn.relay.queue import QueueItem, list_queue
from smtpconn.relay.spool import Spool


def waiting_for(spool_dir: Path, address_ascii: str) -> list[QueueItem]:
    """Messages in the spool (queued, deferred or held) whose support address is this one:
    inbound copies for it and replies sent as it."""
    if not spool_dir.is_dir():
        return []
    wanted = address_ascii.lower()
    return [
        item
        for item in list_queue(Spool(spool_dir))
        if str(item.entry.envelope.meta.get("support_address") or "").lower() == wanted
    ]
