"""Fixtures for integration tests against REAL servers (see lab/): NSD, Postfix + Dovecot SASL.

* ``lab`` (session): every lab server, started once for the whole run, stopped at the end even
  when tests fail (yield fixture; ``Lab`` also registers an atexit guard). After stopping, the
  fixture checks that none of the processes it started is left and none of its ports answers.
* ``lab_env`` (function): ``SMTPCONN_RESOLVER`` / ``SMTPCONN_CA_FILE`` set for the lab (via
  monkeypatch, undone after the test); returns the lab's full env dict.
* ``smtp_sink`` (function): factory for throw-away SMTP listeners (``lab.sink.SmtpSink``) with the
  relay certificate; all are stopped after the test.
* ``relay_domain`` (function): a unique domain name for one test's relay target.

Every test under tests/integration gets the ``integration`` marker automatically.

Skipping: when a program the lab needs is missing (or we are not root), tests SKIP with the
reason, except under CI (env CI set and not "false"/"0"), where that is a hard failure: CI must
never pass by skipping the real-server tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.lab import REQUIRED_BINARIES, Lab
from lab.proc import LOOPBACK, MissingBinaryError, missing_binaries, port_open, session_members
from lab.sink import SmtpSink

_HERE = Path(__file__).parent


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _unavailable(reason: str) -> None:
    if _under_ci():
        pytest.fail(
            f"integration lab unavailable under CI (never skipped there): {reason}", pytrace=False
        )
    pytest.skip(f"integration lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    missing = missing_binaries(REQUIRED_BINARIES)
    if missing:
        _unavailable(
            f"missing program(s) {', '.join(missing)}; "
            "install them with: scripts/bootstrap (it uses sudo when not root)"
        )
    if os.geteuid() != 0:
        _unavailable(
            "Postfix, Dovecot and NSD must be started as root here "
            "(they drop to their own users); run them with scripts/test, which runs "
            "pytest as root (through sudo when you are not root)"
        )
    the_lab = Lab()
    try:
        the_lab.start()
    except MissingBinaryError as e:  # raced with a package removal; same rule as above
        _unavailable(str(e))
    pids = dict(the_lab.pids())
    ports = [
        the_lab.dns.port if the_lab.dns else 0,
        *the_lab.ports.values(),
        the_lab.postfix.sasl_port if the_lab.postfix else 0,
    ]
    try:
        yield the_lab
    finally:
        the_lab.stop()
        # Nothing we started may be left running or listening once the session ends.
        left = {name: session_members(pid) for name, pid in pids.items()}
        left = {k: v for k, v in left.items() if v}
        listening = [p for p in ports if p and port_open(LOOPBACK, p, 0.2)]
        assert not left, f"lab processes left running after stop: {left}"
        assert not listening, f"lab ports still listening after stop: {listening}"


@pytest.fixture
def lab_env(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = lab.state.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def smtp_sink(lab: Lab) -> Iterator[Callable[..., SmtpSink]]:
    """``smtp_sink(users={"u": "p"}, tls=True, **kw)`` -> a started SmtpSink (stopped after)."""
    started: list[SmtpSink] = []

    def make(users: dict[str, str] | None = None, tls: bool = True, **kw: Any) -> SmtpSink:
        assert lab.ca is not None
        cert, key = (lab.ca.relay.cert, lab.ca.relay.key) if tls else (None, None)
        sink = SmtpSink(cert, key, users, **kw)
        started.append(sink)
        return sink.start()

    try:
        yield make
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def relay_domain(lab: Lab) -> Iterator[str]:
    """A fresh domain per test, so relay targets of different tests never interfere."""
    domain = f"r{uuid.uuid4().hex[:10]}.relay.test"
    yield domain
    lab.clear_relay_target(domain)
