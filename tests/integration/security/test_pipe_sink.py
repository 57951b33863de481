"""The pipe command gets a minimal environment (never the relay's, which
holds the profile's ``env:`` secrets), and a message whose metadata cannot be handed to it is held
once, with the reason, instead of failing every second for ever."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from smtpconn.relay.log import LOGGER
from smtpconn.relay.queue import list_queue
from smtpconn.relay.spool import Envelope, Spool
from tests.integration.relay.conftest import RelayEnv, started_relay, write_profile

SECRET_ENV = "SMTPCONN_TEST_CUSTOMER_SMTP_PASSWORD"
SECRET = "customer-smtp-secret-9Qk"


def use_pipe(env: RelayEnv, dump: Path) -> None:
    """Pipe sink whose command writes its environment (JSON) and stdin into ``dump``/<n>."""
    dump.mkdir()
    script = env.root / "dumpenv.py"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"out = {str(dump)!r}\n"
        "path = os.path.join(out, str(len(os.listdir(out))))\n"
        "json.dump({'env': dict(os.environ), 'message': sys.stdin.read()}, open(path, 'w'))\n"
    )
    script.chmod(0o755)
    data = tomllib.loads(env.profile.read_text())
    data["relay"]["sink"] = {"kind": "pipe", "command": [str(script)]}
    write_profile(env.profile, data["addresses"], data["relay"])


@contextmanager
def levels() -> Iterator[list[tuple[int, str]]]:
    """(level, line) of every relay log record."""
    records: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelno, record.getMessage()))

    handler = Keep()
    LOGGER.addHandler(handler)
    try:
        yield records
    finally:
        LOGGER.removeHandler(handler)


async def _until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_pipe_command_does_not_inherit_the_relays_environment(
    relay_env: RelayEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)  # as `secret = "env:…"` in a profile needs
    dump = relay_env.root / "dump"
    use_pipe(relay_env, dump)
    token = f"pipe-env-{uuid.uuid4().hex}"
    rcpt = relay_env.addresses["outbound-only"]
    async with started_relay(relay_env, poll=0.1) as relay:

        def forward() -> None:
            with smtplib.SMTP("127.0.0.1", relay.inbound_port, timeout=10) as client:
                client.sendmail("someone@good.test", [rcpt], f"Subject: {token}\r\n\r\nhello\r\n")

        await asyncio.to_thread(forward)
        await _until(lambda: (dump / "0").exists(), "the pipe command")
        assert await relay.wait_idle(10)
    seen = json.loads((dump / "0").read_text())
    env = seen["env"]
    assert token in seen["message"]
    assert SECRET_ENV not in env and SECRET not in json.dumps(env)
    assert env["PATH"]
    assert env["SMTPCONN_MAIL_FROM"] == "someone@good.test"
    assert env["SMTPCONN_RCPT"] == rcpt
    assert env["SMTPCONN_TAG"] == "unauthenticated"
    assert env["SMTPCONN_MODE"] == "outbound-only"
    extra = set(env) - {"PATH", "LANG", "LC_ALL"} - {k for k in env if k.startswith("SMTPCONN_")}
    assert extra <= {"LC_CTYPE"}, extra  # Python's locale coercion may add it
    # The fixture's own env: secret (the submission password) is not there either.
    assert not any(k.startswith("SMTPCONN_TEST") for k in env)


async def test_a_nul_in_the_metadata_holds_the_message_once(relay_env: RelayEnv) -> None:
    dump = relay_env.root / "dump"
    use_pipe(relay_env, dump)
    # What a message accepted before the listener refused NUL looks like in the spool.
    spool = Spool(relay_env.spool)
    spool.create()
    entry_id = spool.put(
        Envelope(
            "inbound",
            "evil\x00@good.test",
            (relay_env.addresses["outbound-only"],),
            time.time(),
            {"tag": "unauthenticated", "mode": "outbound-only", "helo": "x.good.test"},
        ),
        b"Subject: nul\r\n\r\nbody\r\n",
    )
    with levels() as records:
        async with started_relay(relay_env, poll=0.1) as relay:
            await _until(lambda: "event=inbound.held" in relay_env.log_text(), "the hold")
            await asyncio.sleep(1.5)  # ten polls: a message failing every poll would show
            [item] = list_queue(relay.spool, "inbound")
    assert item.entry.id == entry_id
    assert item.state.held and item.state.attempts == 1
    assert "NUL" in (item.state.last_error or "") and "mail_from" in (item.state.last_error or "")
    assert not dump.exists() or not any(dump.iterdir())  # never run with a mangled sender
    held = [(level, line) for level, line in records if "event=inbound.held" in line]
    assert len(held) == 1 and held[0][0] == logging.ERROR, held
    assert not [line for _, line in records if "event=worker.error" in line]
    assert not [line for _, line in records if "event=inbound.deferred" in line]
