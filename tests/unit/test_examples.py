"""The shipped example profiles parse and mean what their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpconn.profile.model import Mode, Security, Workflow
from smtpconn.profile.store import load_profile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["bidirectional.toml", "outbound-only.toml"])
def test_example_profiles_load(name: str) -> None:
    assert load_profile(EXAMPLES / name).profile.addresses


def test_example_modes() -> None:
    bidirectional = load_profile(EXAMPLES / "bidirectional.toml").profile.addresses[0]
    assert bidirectional.mode is Mode.BIDIRECTIONAL and bidirectional.inbound is not None
    help_address, billing = load_profile(EXAMPLES / "outbound-only.toml").profile.addresses
    assert help_address.outbound is not None and help_address.outbound.security is Security.TLS
    assert billing.workflow is Workflow.FORWARDING and billing.outbound is None
