"""``smtpconn status`` against a real relay and the lab's Postfix: a reply stuck because the
customer's server is down makes its address fail (exit 1, the stage and error, one queued);
once the profile points at the real server, a reload and a retry deliver it and status is clean
(exit 0), also after the relay stopped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from lab.lab import Lab
from lab.proc import free_ports
from smtpconn.relay.queue import list_queue, retry
from smtpconn.relay.runtime import Relay

from .conftest import RelayEnv, outbound_to, write_profile
from .test_relay_outbound import submit

HELP = "help@good.test"


def _write(lab: Lab, env: RelayEnv, port: int | None) -> None:
    assert lab.ca is not None
    write_profile(
        env.profile,
        [{"address": HELP, "mode": "outbound-only", "outbound": outbound_to(lab, port)}],
        {
            "inbound_listen": "127.0.0.1:0",
            "submission_listen": "127.0.0.1:0",
            "tls_cert": str(lab.ca.relay.cert),
            "tls_key": str(lab.ca.relay.key),
            "spool": "spool",
            "retry_initial": 1,
            "sink": {"kind": "maildir", "path": "helpdesk"},
        },
    )


def _status(env: RelayEnv) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "smtpconn", "--profile", str(env.profile), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


async def _wait_status(env: RelayEnv, wanted: int) -> tuple[int, dict[str, Any]]:
    for _ in range(50):
        code, document = await asyncio.to_thread(_status, env)
        if code == wanted:
            return code, document
        await asyncio.sleep(0.3)
    return code, document


async def test_status_with_a_stuck_reply_and_after_it_is_delivered(
    lab: Lab, relay_env: RelayEnv
) -> None:
    _write(lab, relay_env, free_ports(1)[0])
    relay = Relay.from_profile_file(relay_env.profile, settings=relay_env.settings, poll=0.2)
    await relay.start()
    try:
        token = f"status-{uuid.uuid4().hex}"
        await submit(relay.submission_port, HELP, "bob@good.test", token)
        code, document = await _wait_status(relay_env, 1)
        assert code == 1, document
        [stuck] = document["addresses"]
        assert stuck["address"] == HELP and stuck["failing"]
        assert stuck["queued"] == 1 and stuck["held"] == 0 and stuck["oldest_queued_age"] >= 0
        assert stuck["last_error"]["stage"] == "connect", stuck
        assert stuck["last_outbound_delivered"] is None
        assert document["relay"]["running"] is True

        _write(lab, relay_env, None)  # the real customer's server
        assert await relay.reload()
        retry(relay.spool, [], everything=True)
        await asyncio.to_thread(lab.find_message, token, "bob@good.test")
        assert await relay.wait_idle(20)
        code, document = await _wait_status(relay_env, 0)
        assert code == 0, document
        [done] = document["addresses"]
        assert done["queued"] == 0 and not done["failing"]
        assert done["last_outbound_delivered"] > done["last_error"]["time"]
    finally:
        await relay.stop(grace=2.0)
    assert list_queue(relay.spool) == []
    code, document = await asyncio.to_thread(_status, relay_env)
    assert code == 0 and document["relay"]["running"] is False
    assert document["addresses"][0]["last_outbound_delivered"] is not None
