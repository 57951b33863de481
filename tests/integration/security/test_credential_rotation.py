"""Rotation with overlap on a running relay: the password a rotation replaced logs in only while
its grace lasts (the relay asks the clock at every login, so it stops on time without a reload),
only for the addresses it was issued for, and the log says which password a session used."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from lab.lab import Lab
from lab.swaks import send
from smtpconn.profile.secrets import hash_password
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import (
    INBOUND_PASS,
    INBOUND_USER,
    RelayEnv,
    outbound_to,
    started_relay,
    write_profile,
)

from .rawsmtp import RawSmtp

USER = "customer-rot"
OLD_PASS = "old-pass-Kd81q"
NEW_PASS = "new-pass-Wz55m"
OTHER = ("customer-other", "other-pass-Pl20")


def _write(lab: Lab, env: RelayEnv, previous_valid_until: datetime) -> tuple[str, str]:
    relay_table = tomllib.loads(env.profile.read_text())["relay"]
    mine, theirs = f"support@{env.domain}", "sales@other-customer.test"
    write_profile(
        env.profile,
        [
            {
                "address": mine,
                "mode": "bidirectional",
                "outbound": outbound_to(lab),
                "inbound": {
                    "username": USER,
                    "password_hash": hash_password(NEW_PASS),
                    "previous_password_hash": hash_password(OLD_PASS),
                    "previous_valid_until": previous_valid_until,
                },
            },
            {
                "address": theirs,
                "mode": "bidirectional",
                "outbound": outbound_to(lab),
                "inbound": {"username": OTHER[0], "password_hash": hash_password(OTHER[1])},
            },
        ],
        relay_table,
    )
    return mine, theirs


async def _login(lab: Lab, relay: Relay, password: str) -> tuple[RawSmtp, str]:
    client = await RawSmtp.connect(relay.inbound_port)
    await client.greet(lab.ca_file)
    return client, await client.login(USER, password)


async def _send(client: RawSmtp, token: str, rcpts: list[str]) -> dict[str, str]:
    assert (await client.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
    replies = {rcpt: await client.cmd(f"RCPT TO:<{rcpt}>") for rcpt in rcpts}
    if any(r.startswith("250") for r in replies.values()):
        assert (await client.cmd("DATA")).startswith("354")
        replies["DATA"] = await client.cmd(f"Subject: {token}\r\n\r\nrotation\r\n.\r\n".encode())
    return replies


async def _sunk(env: RelayEnv, token: str) -> bytes:
    # Polls without blocking the loop the in-process relay delivers on.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [raw for raw in env.sink_messages() if token.encode() in raw]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message with {token} reached the sink")


def _auth_lines(env: RelayEnv, event: str) -> list[str]:
    return [line for line in env.log_lines if f"event={event}" in line and f"user={USER}" in line]


async def test_during_the_grace_both_passwords_log_in_and_the_log_says_which(
    lab: Lab, relay_env: RelayEnv
) -> None:
    mine, theirs = _write(lab, relay_env, datetime.now(UTC) + timedelta(hours=1))
    token = f"rot-{uuid.uuid4().hex}"
    async with started_relay(relay_env) as relay:
        old, old_reply = await _login(lab, relay, OLD_PASS)
        try:
            assert old_reply.startswith("235"), old_reply
            replies = await _send(old, token, [theirs, mine])
        finally:
            await old.close()
        new, new_reply = await _login(lab, relay, NEW_PASS)
        await new.close()
        assert new_reply.startswith("235"), new_reply
        message = await _sunk(relay_env, token)
    # The old password keeps the scope it was issued for: never the other customer's address.
    assert replies[theirs].startswith("550 5.7.1"), replies
    assert replies[mine].startswith("250") and replies["DATA"].startswith("250"), replies
    assert b"X-Smtpconn-Tag: authenticated; mode=bidirectional" in message
    oks = _auth_lines(relay_env, "auth.ok")
    assert len(oks) == 2, relay_env.log_text()
    assert "credential=previous" in oks[0] and "scope=1" in oks[0]
    assert "credential=current" in oks[1]
    log = relay_env.log_text()
    assert OLD_PASS not in log and NEW_PASS not in log


async def test_after_the_grace_the_old_password_is_refused(lab: Lab, relay_env: RelayEnv) -> None:
    mine, _ = _write(lab, relay_env, datetime.now(UTC) - timedelta(seconds=1))
    async with started_relay(relay_env) as relay:
        old, old_reply = await _login(lab, relay, OLD_PASS)
        try:
            assert old_reply.startswith("535"), old_reply
            # Not logged in: a bidirectional address still demands AUTH.
            assert (await old.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
            assert (await old.cmd(f"RCPT TO:<{mine}>")).startswith("530"), relay_env.log_text()
        finally:
            await old.close()
        new, new_reply = await _login(lab, relay, NEW_PASS)
        await new.close()
    assert new_reply.startswith("235"), new_reply
    assert len(_auth_lines(relay_env, "auth.failed")) == 1
    oks = _auth_lines(relay_env, "auth.ok")
    assert len(oks) == 1 and "credential=current" in oks[0]
    assert relay_env.sink_messages() == []
    assert not list((relay_env.spool / "inbound").iterdir())


async def test_the_grace_ends_while_the_relay_runs(lab: Lab, relay_env: RelayEnv) -> None:
    until = datetime.now(UTC) + timedelta(seconds=3)
    _write(lab, relay_env, until)
    async with started_relay(relay_env) as relay:
        first, first_reply = await _login(lab, relay, OLD_PASS)
        await first.close()
        assert first_reply.startswith("235"), first_reply
        # The success cache must not outlive the grace: the same password, a moment later.
        await asyncio.sleep(max(0.0, until.timestamp() - time.time()) + 0.2)
        second, second_reply = await _login(lab, relay, OLD_PASS)
        await second.close()
    assert second_reply.startswith("535"), second_reply
    assert ["credential=previous" in line for line in _auth_lines(relay_env, "auth.ok")] == [True]
    assert len(_auth_lines(relay_env, "auth.failed")) == 1


async def test_a_session_logged_in_before_the_grace_ended_finishes(
    lab: Lab, relay_env: RelayEnv
) -> None:
    until = datetime.now(UTC) + timedelta(seconds=2)
    mine, _ = _write(lab, relay_env, until)
    token = f"rot-inflight-{uuid.uuid4().hex}"
    async with started_relay(relay_env) as relay:
        client, reply = await _login(lab, relay, OLD_PASS)
        try:
            assert reply.startswith("235"), reply
            await asyncio.sleep(max(0.0, until.timestamp() - time.time()) + 0.2)
            replies = await _send(client, token, [mine])
        finally:
            await client.close()
        await _sunk(relay_env, token)
    assert replies["DATA"].startswith("250"), replies


def _rotate(env: RelayEnv, address: str, grace: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smtpconn",
            "--profile",
            str(env.profile),
            "rotate-credentials",
            address,
            "--grace",
            grace,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


async def test_postfix_with_the_old_password_and_swaks_with_the_new_during_the_grace(
    lab: Lab, relay_env: RelayEnv
) -> None:
    support = relay_env.addresses["bidirectional"]
    async with started_relay(relay_env) as relay:
        rotated = await asyncio.to_thread(_rotate, relay_env, support, "6s")
        assert support in rotated["addresses"]
        until = datetime.fromisoformat(rotated["previous_valid_until"])
        assert await relay.reload()
        # The customer's Postfix still has the old password in its relay transport.
        lab.set_relay_target(
            relay_env.domain, "127.0.0.1", relay.inbound_port, INBOUND_USER, INBOUND_PASS
        )
        old_token, new_token, late_token = (
            f"rot-{n}-{uuid.uuid4().hex}" for n in ("old", "new", "late")
        )
        res = await asyncio.to_thread(
            lab.send, "mx", to=support, sender="customer@good.test", subject=old_token
        )
        assert res.ok, res.transcript
        await _sunk(relay_env, old_token)
        new = await asyncio.to_thread(
            send,
            relay.inbound_port,
            to=support,
            sender="someone@good.test",
            subject=new_token,
            tls="starttls",
            auth=(INBOUND_USER, rotated["password"]),
        )
        assert new.ok, new.transcript
        await _sunk(relay_env, new_token)
        await asyncio.sleep(max(0.0, until.timestamp() - time.time()) + 0.5)
        late = await asyncio.to_thread(
            send,
            relay.inbound_port,
            to=support,
            sender="someone@good.test",
            subject=late_token,
            tls="starttls",
            auth=(INBOUND_USER, INBOUND_PASS),
        )
        assert not late.ok and "535" in late.transcript, late.transcript
        lab.clear_relay_target(relay_env.domain)
    oks = [line for line in relay_env.log_lines if "event=auth.ok" in line]
    assert ["credential=previous" in oks[0], "credential=current" in oks[1]] == [True, True], oks
    assert len(oks) == 2
    assert not any(late_token.encode() in raw for raw in relay_env.sink_messages())
    log = relay_env.log_text()
    assert rotated["password"] not in log and INBOUND_PASS not in log
