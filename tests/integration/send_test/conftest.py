"""send-test fixtures: a profile pointing at the lab's Postfix (outbound), and a connector with a
running ``smtpconn relay`` (inbound, round trip)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lab.lab import Lab
from tests.conftest import CliInvoker
from tests.integration.relay.conftest import RelayEnv, RelayProcess, relay_process

from .relay_connector import OUTBOUND_SECRET_ENV, Connector, make_connector

__all__ = ["relay_process"]  # the relay engineer's fixture, run against our relay_env below

SECRET_ENV = "SMTPCONN_TEST_SEND_SECRET"


@pytest.fixture
def write_profile(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    def write(
        port_name: str = "submission",
        *,
        security: str = "starttls",
        password: str | None = None,
        dkim: bool = True,
        extra: str = "",
        address: str = "support@good.test",
    ) -> Path:
        monkeypatch.setenv(SECRET_ENV, password if password is not None else lab.user.password)
        selector, key = lab.dkim_key_for("good.test")
        dkim_table = (
            f'[addresses.dkim]\nselector = "{selector}"\nprivate_key = "{key.path}"\n'
            if dkim
            else ""
        )
        profile = tmp_path / "smtpconn.toml"
        profile.write_text(
            f"""version = 1

[[addresses]]
address = "{address}"
mode = "outbound-only"
workflow = "authenticated"

[addresses.outbound]
host = "{lab.server_name}"
port = {lab.ports[port_name]}
security = "{security}"
auth = "auto"
username = "{lab.user.username}"
secret = "env:{SECRET_ENV}"

{dkim_table}
{extra}"""
        )
        profile.chmod(0o600)
        return profile

    return write


@pytest.fixture
def lab_args(lab: Lab) -> list[str]:
    return ["--resolver", lab.resolver, "--ca-file", str(lab.ca_file), "--timeout", "5"]


# -- a running relay, for the inbound and round-trip directions ------------------------------


@pytest.fixture
def connector_domain(relay_domain: str) -> str:
    """The domain of the connector's addresses; a fresh one per test unless a module overrides."""
    return relay_domain


@pytest.fixture
def dkim_signer() -> str:
    """Who signs the connector's bidirectional address (see ``add_addresses``)."""
    return "smtpconn"


@pytest.fixture
def connector(
    lab: Lab,
    cli: CliInvoker,
    tmp_path: Path,
    connector_domain: str,
    dkim_signer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Connector:
    monkeypatch.setenv(OUTBOUND_SECRET_ENV, lab.user.password)
    monkeypatch.delenv("SMTPCONN_INBOUND_PASSWORD", raising=False)
    return make_connector(lab, cli, tmp_path / "connector", connector_domain, signer=dkim_signer)


@pytest.fixture
def relay_env(connector: Connector) -> RelayEnv:
    return connector.env


@pytest.fixture
def relay(connector: Connector, relay_process: Callable[..., RelayProcess]) -> RelayProcess:
    """``smtpconn relay`` as its own process, listening where the profile says."""
    return relay_process(inbound_port=connector.inbound_port)
