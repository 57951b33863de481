"""Fixtures for the attack suite: the relay fixtures of ``tests/integration/relay`` (a profile
pointing at the lab, an in-process relay with its log collected) and ``RawSmtp``, a client that
sends exactly the bytes a test gives it."""

from __future__ import annotations

from tests.integration.relay.conftest import (  # noqa: F401 (fixtures are found by name)
    relay_env,
    relay_process,
    running_relay,
)
