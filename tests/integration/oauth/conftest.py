"""The lab OAuth2 authorization server (lab/oauth.py) for one test, over HTTPS with the lab CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.ca import LabCA, write_lab_ca
from lab.lab import Lab
from lab.oauth import LabOAuthServer
from tests.integration.relay.conftest import relay_env  # noqa: F401 (fixtures are found by name)


@pytest.fixture(scope="session")
def oauth_ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    return write_lab_ca(tmp_path_factory.mktemp("oauth-ca"))


@pytest.fixture
def oauth_server(oauth_ca: LabCA) -> Iterator[LabOAuthServer]:
    with LabOAuthServer(oauth_ca.relay) as server:
        yield server


@pytest.fixture
def ca_file(oauth_ca: LabCA) -> Path:
    return oauth_ca.ca_cert


@pytest.fixture
def lab_issuer(lab: Lab) -> Iterator[LabOAuthServer]:
    """The issuer the lab's oauth_submission port trusts (its Dovecot introspects here)."""
    assert lab.postfix is not None and lab.ca is not None
    with LabOAuthServer(lab.ca.relay, port=lab.postfix.oauth_issuer_port) as server:
        yield server
