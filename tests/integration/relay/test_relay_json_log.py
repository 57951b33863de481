"""``smtpconn relay --log-format json``: one JSON object per line with the fields of the
key=value lines, control characters a client sent escaped inside the string (never a line
break); a bad --log-format exits 2 before anything starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.integration.security.rawsmtp import RawSmtp

from .conftest import RelayEnv


def _start(env: RelayEnv, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = env.root / f"json-{uuid.uuid4().hex[:6]}.log"
    host, port = env.settings.resolvers[0]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smtpconn",
                "relay",
                "--profile",
                str(env.profile),
                "--resolver",
                f"{host}:{port}",
                "--inbound-listen",
                "127.0.0.1:0",
                "--submission-listen",
                "127.0.0.1:0",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return process, log


async def test_json_lines_carry_the_events_and_their_fields(relay_env: RelayEnv) -> None:
    process, log_path = _start(relay_env, "--log-format", "json")
    try:
        deadline = time.monotonic() + 20
        port = None
        while time.monotonic() < deadline and port is None:
            match = re.search(rb'"inbound":"127\.0\.0\.1:(\d+)"', log_path.read_bytes())
            port = int(match.group(1)) if match else None
            time.sleep(0.05)
        assert port, log_path.read_text()
        client = await RawSmtp.connect(port)
        assert (await client.cmd("EHLO evil\x1b[2J.example")).startswith("501")
        assert (await client.cmd("EHLO good.example")).startswith("250")
        assert (await client.cmd("RCPT TO:<x@nowhere.invalid>")).startswith("503")
        assert (await client.cmd("MAIL FROM:<a@b.test>")).startswith("250")
        assert (await client.cmd("RCPT TO:<x@nowhere.invalid>")).startswith("550")
        await client.close()
        time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(10)
    lines = log_path.read_text().splitlines()
    documents = [json.loads(line) for line in lines]  # every line is one JSON object
    events = [d.get("event") for d in documents]
    assert events[0] == "relay.ready" and events[-1] == "relay.stopped", events
    ready = documents[0]
    assert ready["level"] == "info" and ready["ts"].endswith("Z") and ready["sink"] == "maildir"
    refused = next(d for d in documents if d.get("event") == "inbound.refused")
    assert refused["rcpt"] == "x@nowhere.invalid" and refused["reason"] == "not-served"
    assert not any("\x1b" in line for line in lines)


def test_a_bad_log_format_exits_2(relay_env: RelayEnv) -> None:
    process, log_path = _start(relay_env, "--log-format", "xml")
    assert process.wait(30) == 2
    text = log_path.read_text()
    assert "--log-format" in text and "Traceback" not in text
