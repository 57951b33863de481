"""One customer's inbound login must not deliver to another customer's
addresses. A login is valid for the addresses whose entry holds that same user name and hash."""

from __future__ import annotations

import asyncio
import time
import tomllib
import uuid
from typing import Any

from lab.lab import Lab
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

ALPHA = ("customer-a", "alpha-pass-Zq81")
BETA = ("customer-b", "beta-pass-Lm42")
SHARED = ("customer-c", "gamma-pass-Rt09")
ALPHA_HASH = hash_password(ALPHA[1])
BETA_HASH = hash_password(BETA[1])
SHARED_HASH = hash_password(SHARED[1])
OTHER_HASH_PASS = "alpha-second-pass-Wv3"


def _bidirectional(lab: Lab, address: str, username: str, password_hash: str) -> dict[str, Any]:
    return {
        "address": address,
        "mode": "bidirectional",
        "outbound": outbound_to(lab),
        "inbound": {"username": username, "password_hash": password_hash},
    }


def _addresses(env: RelayEnv) -> dict[str, str]:
    d = env.domain
    return {
        "a": f"support@{d}",  # customer A's login only
        "b": "sales@customer-b.test",  # customer B's login only
        "c1": f"help@{d}",  # customer C: one login shared by two addresses (add-address does this)
        "c2": "desk@customer-c.test",
        "forward": f"forward@{d}",  # outbound-only: no login was issued for it
        "dup": f"other@{d}",  # hand-edited: customer A's user name under a second hash
    }


def _write_scoped_profile(lab: Lab, env: RelayEnv) -> dict[str, str]:
    relay_table = tomllib.loads(env.profile.read_text())["relay"]
    a = _addresses(env)
    write_profile(
        env.profile,
        [
            _bidirectional(lab, a["a"], ALPHA[0], ALPHA_HASH),
            _bidirectional(lab, a["b"], BETA[0], BETA_HASH),
            _bidirectional(lab, a["c1"], SHARED[0], SHARED_HASH),
            _bidirectional(lab, a["c2"], SHARED[0], SHARED_HASH),
            {"address": a["forward"], "mode": "outbound-only", "outbound": outbound_to(lab)},
            _bidirectional(lab, a["dup"], ALPHA[0], hash_password(OTHER_HASH_PASS)),
        ],
        relay_table,
    )
    return a


async def _session(lab: Lab, relay: Relay, login: tuple[str, str]) -> RawSmtp:
    client = await RawSmtp.connect(relay.inbound_port)
    await client.greet(lab.ca_file, login)
    return client


async def _rcpts(client: RawSmtp, token: str, rcpts: list[str]) -> dict[str, str]:
    assert (await client.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
    return {rcpt: await client.cmd(f"RCPT TO:<{rcpt}>") for rcpt in rcpts}


async def _data(client: RawSmtp, token: str) -> str:
    assert (await client.cmd("DATA")).startswith("354")
    return await client.cmd(f"Subject: {token}\r\n\r\nscope test\r\n.\r\n".encode())


def _delivered_to(env: RelayEnv, token: str) -> set[str]:
    found = set()
    for raw in env.sink_messages():
        if token.encode() not in raw:
            continue
        for line in raw.decode("utf-8", "replace").splitlines():
            if line.lower().startswith("delivered-to:"):
                found.add(line.split(":", 1)[1].strip())
    return found


async def _wait_delivered(env: RelayEnv, token: str, count: int) -> set[str]:
    """The addresses copies of ``token`` were delivered to, once ``count`` of them arrived."""
    deadline = time.monotonic() + 30
    while len(found := _delivered_to(env, token)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return found


def _accepted_rcpts(env: RelayEnv) -> list[str]:
    return [
        part.removeprefix("rcpt=")
        for line in env.log_lines
        if "event=inbound.accepted" in line
        for part in line.split()
        if part.startswith("rcpt=")
    ]


def _copy_for(env: RelayEnv, token: str, rcpt: str) -> bytes:
    for raw in env.sink_messages():
        if token.encode() in raw and f"Delivered-To: {rcpt}".encode() in raw:
            return raw
    raise AssertionError(f"no copy of {token} for {rcpt}")


async def test_a_login_cannot_deliver_to_another_customers_address(
    lab: Lab, relay_env: RelayEnv
) -> None:
    a = _write_scoped_profile(lab, relay_env)
    token = f"scope-{uuid.uuid4().hex}"
    async with started_relay(relay_env) as relay:
        client = await _session(lab, relay, ALPHA)
        try:
            replies = await _rcpts(client, token, [a["b"], a["c1"], a["forward"], a["a"]])
            assert (await _data(client, token)).startswith("250"), replies
        finally:
            await client.close()
        assert await _wait_delivered(relay_env, token, 2) == {a["a"], a["forward"]}
        await asyncio.sleep(0.5)  # room for any wrongly accepted copy to arrive too
    for rcpt in (a["b"], a["c1"]):
        assert replies[rcpt].startswith("550 5.7.1"), (rcpt, replies[rcpt])
        assert "not authorised for this login" in replies[rcpt]
    assert replies[a["a"]].startswith("250"), replies
    # The forwarding path takes anyone's mail, a logged-in stranger's too, but the login was not
    # issued for that address: its copy is tagged unauthenticated.
    assert replies[a["forward"]].startswith("250"), replies
    assert _delivered_to(relay_env, token) == {a["a"], a["forward"]}
    own = _copy_for(relay_env, token, a["a"])
    assert b"X-Smtpconn-Tag: authenticated; mode=bidirectional" in own
    forwarded = _copy_for(relay_env, token, a["forward"])
    assert b"X-Smtpconn-Tag: unauthenticated; mode=outbound-only" in forwarded
    assert b"X-Smtpconn-Tag: authenticated" not in forwarded
    assert sorted(_accepted_rcpts(relay_env)) == sorted([a["a"], a["forward"]])
    log = relay_env.log_text()
    for rcpt in (a["b"], a["c1"]):
        refusals = [
            line
            for line in relay_env.log_lines
            if "event=inbound.refused" in line and f"rcpt={rcpt}" in line
        ]
        assert len(refusals) == 1, log
        assert "reason=outside-credential-scope" in refusals[0]
        assert f"user={ALPHA[0]}" in refusals[0]
    accepted_forward = [
        line
        for line in relay_env.log_lines
        if "event=inbound.accepted" in line and f"rcpt={a['forward']}" in line
    ]
    assert len(accepted_forward) == 1 and "tag=unauthenticated" in accepted_forward[0]
    assert "event=auth.ok" in log and f"user={ALPHA[0]}" in log and "scope=1" in log
    assert ALPHA[1] not in log


async def test_a_transaction_only_for_the_other_customer_stores_nothing(
    lab: Lab, relay_env: RelayEnv
) -> None:
    a = _write_scoped_profile(lab, relay_env)
    token = f"scope-only-b-{uuid.uuid4().hex}"
    async with started_relay(relay_env) as relay:
        client = await _session(lab, relay, ALPHA)
        try:
            replies = await _rcpts(client, token, [a["b"]])
            assert replies[a["b"]].startswith("550 5.7.1"), replies
            data = await client.cmd("DATA")
            assert not data.startswith("354"), data
        finally:
            await client.close()
    assert _accepted_rcpts(relay_env) == []
    assert relay_env.sink_messages() == []
    for direction in ("inbound", "tmp"):
        assert not list((relay_env.spool / direction).iterdir())


async def test_a_shared_login_reaches_exactly_its_addresses(lab: Lab, relay_env: RelayEnv) -> None:
    a = _write_scoped_profile(lab, relay_env)
    token = f"scope-shared-{uuid.uuid4().hex}"
    async with started_relay(relay_env) as relay:
        client = await _session(lab, relay, SHARED)
        try:
            replies = await _rcpts(client, token, [a["c1"], a["c2"], a["a"], a["b"]])
            assert (await _data(client, token)).startswith("250"), replies
        finally:
            await client.close()
        await _wait_delivered(relay_env, token, 2)
    assert replies[a["c1"]].startswith("250") and replies[a["c2"]].startswith("250"), replies
    assert replies[a["a"]].startswith("550 5.7.1") and replies[a["b"]].startswith("550 5.7.1")
    assert _delivered_to(relay_env, token) == {a["c1"], a["c2"]}
    assert "scope=2" in relay_env.log_text()


async def test_a_user_name_under_two_hashes_is_scoped_by_the_password(
    lab: Lab, relay_env: RelayEnv
) -> None:
    a = _write_scoped_profile(lab, relay_env)
    async with started_relay(relay_env) as relay:
        first = await _session(lab, relay, ALPHA)
        second = await _session(lab, relay, (ALPHA[0], OTHER_HASH_PASS))
        try:
            by_first = await _rcpts(first, "x", [a["a"], a["dup"]])
            by_second = await _rcpts(second, "y", [a["a"], a["dup"]])
        finally:
            await first.close()
            await second.close()
    assert by_first[a["a"]].startswith("250") and by_first[a["dup"]].startswith("550 5.7.1")
    assert by_second[a["dup"]].startswith("250") and by_second[a["a"]].startswith("550 5.7.1")


async def test_the_fixture_profile_shared_login_keeps_working(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    """Existing profiles: support@<domain> and support@good.test share INBOUND_USER's hash."""
    token = f"scope-fixture-{uuid.uuid4().hex}"
    both = [f"support@{relay_env.domain}", "support@good.test"]
    client = await _session(lab, running_relay, (INBOUND_USER, INBOUND_PASS))
    try:
        replies = await _rcpts(client, token, both)
        assert (await _data(client, token)).startswith("250"), replies
    finally:
        await client.close()
    assert all(r.startswith("250") for r in replies.values()), replies
    assert await _wait_delivered(relay_env, token, 2) == set(both)
