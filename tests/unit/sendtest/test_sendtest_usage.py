"""send-test refuses what cannot work before sending anything, and says what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpconn.addresses import parse_address
from smtpconn.errors import CouldNotRun, UsageError
from smtpconn.profile.model import Mode, Profile, RelaySettings, SupportAddress, Workflow
from smtpconn.sendtest.run import roundtrip, send_outbound
from smtpconn.settings import Settings


async def test_forwarding_workflow_address_has_nothing_to_send_outbound(tmp_path: Path) -> None:
    entry = SupportAddress(
        parse_address("fwd@example.com"), Mode.OUTBOUND_ONLY, Workflow.FORWARDING
    )
    with pytest.raises(UsageError) as refused:
        await send_outbound(
            Profile(addresses=(entry,)), tmp_path, entry, Settings(), parse_address("a@b.test")
        )
    assert "standard forwarding workflow" in refused.value.message
    assert refused.value.fix is not None
    assert "smtpconn add-address fwd@example.com --readd --server" in refused.value.fix


async def test_roundtrip_without_relay_table_or_listener_sends_nothing(tmp_path: Path) -> None:
    entry = SupportAddress(
        parse_address("support@example.com"), Mode.BIDIRECTIONAL, Workflow.AUTHENTICATED
    )
    with pytest.raises(UsageError, match=r"no \[relay\] table"):
        await roundtrip(Profile(addresses=(entry,)), tmp_path, entry, Settings(), wait=1)
    # A port nothing listens on: bind one, note it, close it.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = Profile(addresses=(entry,), relay=RelaySettings(inbound_listen=f"127.0.0.1:{port}"))
    with pytest.raises(CouldNotRun, match="the relay is not listening") as refused:
        await roundtrip(profile, tmp_path, entry, Settings(), wait=1)
    assert "nothing was sent" in refused.value.message
