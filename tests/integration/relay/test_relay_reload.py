"""Live reload: SIGHUP or ``smtpconn relay --reload`` re-reads the profile. New sessions see added,
removed and re-added addresses and rotated credentials; a session in progress finishes under the
settings it started with; an invalid profile is refused with one log line and the running one
stays; a load across several reloads loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import tomli_w

from lab.lab import Lab
from smtpconn.profile.secrets import hash_password
from tests.integration.security.rawsmtp import RawSmtp

from .conftest import (
    INBOUND_PASS,
    INBOUND_USER,
    RelayEnv,
    RelayProcess,
    outbound_to,
    started_relay,
)

NEW_PASS = "rotated-pass-Qe73"


def _profile(env: RelayEnv) -> dict[str, Any]:
    return tomllib.loads(env.profile.read_text())


def _save(env: RelayEnv, data: dict[str, Any]) -> None:
    env.profile.write_text(tomli_w.dumps(data))


def _add_forwarding(env: RelayEnv, lab: Lab, address: str) -> None:
    data = _profile(env)
    data["addresses"].append(
        {"address": address, "mode": "outbound-only", "outbound": outbound_to(lab)}
    )
    _save(env, data)


def _remove(env: RelayEnv, address: str) -> None:
    data = _profile(env)
    data["addresses"] = [a for a in data["addresses"] if a["address"] != address]
    _save(env, data)


async def _rcpt(port: int, rcpt: str, login: tuple[str, str] | None = None, ca: Any = None) -> str:
    client = await RawSmtp.connect(port)
    try:
        await client.greet(ca, login)
        assert (await client.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
        return await client.cmd(f"RCPT TO:<{rcpt}>")
    finally:
        await client.close()


async def _sunk(env: RelayEnv, token: str) -> bytes:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for raw in env.sink_messages():
            if token.encode() in raw:
                return raw
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message with {token} reached the sink")


async def test_added_and_removed_addresses_apply_to_new_sessions_only(
    lab: Lab, relay_env: RelayEnv
) -> None:
    added = f"late@{relay_env.domain}"
    forward = relay_env.addresses["outbound-only"]
    token = f"inflight-{uuid.uuid4().hex}"
    async with started_relay(relay_env) as relay:
        assert (await _rcpt(relay.inbound_port, added)).startswith("550 5.7.1")
        # A session that started before the reload keeps its settings to the end.
        early = await RawSmtp.connect(relay.inbound_port)
        await early.greet()
        _add_forwarding(relay_env, lab, added)
        _remove(relay_env, forward)
        assert await relay.reload()
        try:
            assert (await early.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
            assert (await early.cmd(f"RCPT TO:<{forward}>")).startswith("250")
            assert (await early.cmd("DATA")).startswith("354")
            done = await early.cmd(f"Subject: {token}\r\n\r\nbefore the reload\r\n.\r\n".encode())
            assert done.startswith("250"), done
        finally:
            await early.close()
        assert (await _rcpt(relay.inbound_port, added)).startswith("250")
        assert (await _rcpt(relay.inbound_port, forward)).startswith("550 5.7.1")
        await _sunk(relay_env, token)
    reloaded = [line for line in relay_env.log_lines if "event=relay.reloaded" in line]
    assert len(reloaded) == 1 and "addresses=3" in reloaded[0], relay_env.log_text()
    assert "restart_needed=-" in reloaded[0]


async def test_rotated_credentials_apply_after_the_reload(lab: Lab, relay_env: RelayEnv) -> None:
    support = relay_env.addresses["bidirectional"]
    async with started_relay(relay_env) as relay:
        data = _profile(relay_env)
        for entry in data["addresses"]:
            if "inbound" in entry:
                entry["inbound"] = {
                    "username": INBOUND_USER,
                    "password_hash": hash_password(NEW_PASS),
                    "previous_password_hash": entry["inbound"]["password_hash"],
                    "previous_valid_until": datetime.now(UTC) + timedelta(hours=1),
                }
        _save(relay_env, data)
        new_login = (INBOUND_USER, NEW_PASS)
        client = await RawSmtp.connect(relay.inbound_port)
        await client.greet(lab.ca_file)
        assert (await client.login(*new_login)).startswith("535")  # not yet: no reload
        await client.close()
        assert await relay.reload()
        assert (await _rcpt(relay.inbound_port, support, new_login, lab.ca_file)).startswith("250")
        old_login = (INBOUND_USER, INBOUND_PASS)
        assert (await _rcpt(relay.inbound_port, support, old_login, lab.ca_file)).startswith("250")
    oks = [line for line in relay_env.log_lines if "event=auth.ok" in line]
    assert ["credential=current" in oks[0], "credential=previous" in oks[1]] == [True, True]


async def test_an_invalid_profile_is_refused_and_the_running_one_stays(
    lab: Lab, relay_env: RelayEnv
) -> None:
    forward = relay_env.addresses["outbound-only"]
    async with started_relay(relay_env) as relay:
        good = relay_env.profile.read_bytes()
        for broken in (
            b"version = 1\n[[addresses]]\naddress = 7\n",
            b"not toml [",
            good + b"\n[relay.nonsense]\n",
        ):
            relay_env.profile.write_bytes(broken)
            assert not await relay.reload()
        relay_env.profile.write_bytes(good.replace(b'"127.0.0.1:0"', b'"192.0.2.1:0"', 2))
        assert not await relay.reload()  # a public submission listener without AUTH
        assert (await _rcpt(relay.inbound_port, forward)).startswith("250")
    refused = [line for line in relay_env.log_lines if "event=relay.reload-refused" in line]
    assert len(refused) == 4, relay_env.log_text()
    assert all("reason=" in line for line in refused)
    assert not any("event=relay.reloaded" in line for line in relay_env.log_lines)


def _send_many(port: int, tokens: list[str], rcpt: str) -> list[str]:
    import smtplib

    accepted = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for token in tokens:
            client.sendmail("someone@good.test", [rcpt], f"Subject: {token}\r\n\r\nload\r\n")
            accepted.append(token)
    return accepted


async def test_sighup_during_a_load_loses_nothing_and_reload_finds_the_relay(
    lab: Lab, relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    assert relay_env.cli("relay", "--reload").returncode == 2  # nothing runs yet
    proc = relay_process(inbound_port=0)
    forward = relay_env.addresses["outbound-only"]
    added = f"late@{relay_env.domain}"
    tokens = [[f"load-{c}-{i}-{uuid.uuid4().hex[:8]}" for i in range(250)] for c in range(4)]
    senders = [asyncio.to_thread(_send_many, proc.inbound_port, batch, forward) for batch in tokens]
    load = asyncio.gather(*senders)
    _add_forwarding(relay_env, lab, added)
    for _ in range(3):
        await asyncio.sleep(0.3)
        os.kill(proc.process.pid, signal.SIGHUP)
    result = await asyncio.to_thread(relay_env.cli, "relay", "--reload", "--json")
    assert result.returncode == 0, result.stderr
    accepted = [t for batch in await load for t in batch]
    assert len(accepted) == 1000
    assert (await _rcpt(proc.inbound_port, added)).startswith("250")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = b"".join(relay_env.sink_messages())
        if all(t.encode() in text for t in accepted):
            break
        await asyncio.sleep(0.2)
    text = b"".join(relay_env.sink_messages())
    assert [t for t in accepted if t.encode() not in text] == []
    log = proc.log.read_text()
    assert log.count("event=relay.reloaded") == 4, log
    assert "event=relay.reload-refused" not in log and "Traceback" not in log
    proc.process.terminate()
    proc.process.wait(10)
    assert not (relay_env.spool / "relay.pid").exists()


async def test_reload_never_signals_a_process_that_is_not_the_relay(relay_env: RelayEnv) -> None:
    # The pid file is in the spool; whoever can write there must not make --reload signal an
    # arbitrary process.
    victim = subprocess.Popen(["sleep", "60"])
    try:
        async with started_relay(relay_env):
            (relay_env.spool / "relay.pid").write_text(f"{victim.pid}\n")
            result = await asyncio.to_thread(relay_env.cli, "relay", "--reload")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "no relay is running" in result.stderr and "Traceback" not in result.stderr
        assert victim.poll() is None  # SIGHUP would have ended it
    finally:
        victim.kill()
        victim.wait()


def test_what_a_reload_cannot_change_is_named() -> None:
    from dataclasses import replace
    from pathlib import Path

    from smtpconn.profile.model import Profile
    from smtpconn.relay.config import build_config
    from smtpconn.relay.reload import needs_restart

    running = build_config(Profile(), Path("."))
    loaded = replace(running, max_sessions=9, spool_dir=Path("/elsewhere"), hostname="new.test")
    assert needs_restart(running, loaded) == ["spool_dir", "max_sessions"]
