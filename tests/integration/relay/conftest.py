"""Fixtures for the relay's integration tests: a profile pointing at the lab, and a relay
running in-process (``running_relay``) or as a subprocess (``relay_process``)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from lab.lab import Lab
from smtpconn.profile.secrets import hash_password
from smtpconn.relay.log import LOGGER
from smtpconn.relay.runtime import Relay
from smtpconn.settings import Settings

INBOUND_USER = "customer-relay"
INBOUND_PASS = "inbound-pass-Xq7"
INBOUND_HASH = hash_password(INBOUND_PASS)
SUBMIT_SECRET_ENV = "SMTPCONN_TEST_RELAY_SUBMIT_PW"


@dataclass
class RelayEnv:
    """Where a test's relay keeps things and what its profile contains."""

    root: Path
    profile: Path
    spool: Path
    maildir: Path
    domain: str  # the test's own relay domain (Postfix relays it to us)
    settings: Settings
    addresses: dict[str, str] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)

    def log_text(self) -> str:
        """Everything the relay logged (captured by the ``relay_log`` handler)."""
        return "\n".join(self.log_lines)

    def sink_messages(self) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                out += [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()]
        return out

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``smtpconn --profile <this profile> ARGS`` as a user runs it (exit code not checked)."""
        return subprocess.run(
            [sys.executable, "-m", "smtpconn", "--profile", str(self.profile), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def wait_for_sink(self, token: str, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for raw in self.sink_messages():
                if token.encode() in raw:
                    return raw
            time.sleep(0.05)
        raise AssertionError(f"no message with {token} reached the Maildir sink {self.maildir}")


def write_profile(path: Path, addresses: list[dict[str, Any]], relay: dict[str, Any]) -> None:
    data = {"version": 1, "addresses": addresses, "relay": relay}
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    path.chmod(0o600)


def outbound_to(lab: Lab, port: int | None = None) -> dict[str, Any]:
    """The lab Postfix's submission port as the customer's server, by its host name as an
    administrator would give it: the relay must find it through the configured resolver."""
    return {
        "host": lab.server_name,
        "port": port if port is not None else lab.ports["submission"],
        "security": "starttls",
        "username": lab.user.username,
        "secret": f"env:{SUBMIT_SECRET_ENV}",
    }


@pytest.fixture
def relay_env(
    lab: Lab, tmp_path: Path, relay_domain: str, monkeypatch: pytest.MonkeyPatch
) -> RelayEnv:
    """A profile: bidirectional support@<domain>, outbound-only forward@<domain>, and the lab's
    support@good.test (bidirectional) for replies; maildir sink; fast retries."""
    assert lab.ca is not None
    monkeypatch.setenv(SUBMIT_SECRET_ENV, lab.user.password)
    addresses = [
        {
            "address": f"support@{relay_domain}",
            "mode": "bidirectional",
            "outbound": outbound_to(lab),
            "inbound": {"username": INBOUND_USER, "password_hash": INBOUND_HASH},
        },
        {
            "address": f"forward@{relay_domain}",
            "mode": "outbound-only",
            "outbound": outbound_to(lab),
        },
        {
            "address": "support@good.test",
            "mode": "bidirectional",
            "outbound": outbound_to(lab),
            "inbound": {"username": INBOUND_USER, "password_hash": INBOUND_HASH},
        },
    ]
    relay = {
        "inbound_listen": "127.0.0.1:0",
        "submission_listen": "127.0.0.1:0",
        "tls_cert": str(lab.ca.relay.cert),
        "tls_key": str(lab.ca.relay.key),
        "spool": "spool",
        "hostname": "relay.helpdesk.test",
        "retry_initial": 1,
        "sink": {"kind": "maildir", "path": "helpdesk"},
    }
    profile = tmp_path / "smtpconn.toml"
    write_profile(profile, addresses, relay)
    host, _, port = lab.resolver.rpartition(":")
    settings = Settings(
        profile_path=profile, resolvers=((host, int(port)),), ca_file=lab.ca_file, timeout=3.0
    )
    return RelayEnv(
        root=tmp_path,
        profile=profile,
        spool=tmp_path / "spool",
        maildir=tmp_path / "helpdesk",
        domain=relay_domain,
        settings=settings,
        addresses={str(a["mode"]): str(a["address"]) for a in addresses[:2]},
    )


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@asynccontextmanager
async def started_relay(env: RelayEnv, *, poll: float = 0.2) -> AsyncIterator[Relay]:
    """An in-process relay on ``env``'s profile whose log lines are collected in
    ``env.log_lines``; stopped (and the collector removed) on exit."""
    handler = _Collect(env.log_lines)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.DEBUG)
    relay = Relay.from_profile_file(env.profile, settings=env.settings, poll=poll)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop(grace=2.0)
        LOGGER.removeHandler(handler)


@pytest.fixture
async def running_relay(relay_env: RelayEnv) -> AsyncIterator[Relay]:
    async with started_relay(relay_env) as relay:
        yield relay


@dataclass
class RelayProcess:
    process: subprocess.Popen[bytes]
    inbound_port: int
    submission_port: int
    log: Path


_READY = re.compile(rb"event=relay\.ready inbound=[\d.]+:(\d+) submission=[\d.]+:(\d+)")


@pytest.fixture
def relay_process(relay_env: RelayEnv) -> Iterator[Callable[..., RelayProcess]]:
    """``start(inbound_port=0)`` runs ``python -m smtpconn relay`` and waits until it listens."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        inbound_port: int = 0, submission_port: int = 0, args: Sequence[str] = ()
    ) -> RelayProcess:
        log = relay_env.root / f"relay-{len(started)}.log"
        host, port = relay_env.settings.resolvers[0]
        handle = log.open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smtpconn",
                "relay",
                "--profile",
                str(relay_env.profile),
                "--resolver",
                f"{host}:{port}",
                "--timeout",
                "3",
                "--inbound-listen",
                f"127.0.0.1:{inbound_port}",
                "--submission-listen",
                f"127.0.0.1:{submission_port}",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        handle.close()
        started.append(process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = _READY.search(log.read_bytes())
            if match:
                return RelayProcess(process, int(match.group(1)), int(match.group(2)), log)
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"relay did not start:\n{log.read_text(errors='replace')}")

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
