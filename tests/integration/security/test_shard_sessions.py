"""A session a shard child serves (``[relay] processes = 2``) is the main's session: the same
hostile bytes get the same replies, a forged ``X-Smtpconn-Tag`` is stripped the same way, and an
AUTH brute force is limited across the processes (each takes its share of
``auth_failures_allowed``, so the whole relay allows about what the administrator wrote)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable

from lab.lab import Lab
from tests.integration.relay.conftest import INBOUND_PASS, INBOUND_USER, RelayEnv, RelayProcess

from .rawsmtp import RawSmtp

ATTEMPTS = 40  # sessions until both processes served one (each ~50 %)


def _start(relay_process: Callable[..., RelayProcess]) -> RelayProcess:
    relay = relay_process(args=["--processes", "2"])
    for _ in range(400):
        if "event=relay.shard-ready" in relay.log.read_text():
            return relay
        time.sleep(0.05)
    raise AssertionError(relay.log.read_text())


def _shard_of(relay: RelayProcess, needle: str, event: str) -> str | None:
    for line in relay.log.read_text(errors="replace").splitlines():
        if f"event={event} " in line and needle in line:
            found = re.search(r" shard=(\d+)", line)
            return found.group(1) if found else None
    return None


async def _hostile_session(port: int, rcpt: str, token: str) -> list[str]:
    """Pipelined commands, a message forging the relay's tag (plain, folded, odd case), then
    pipelined garbage; every reply, ids blanked."""
    client = await RawSmtp.connect(port)
    replies = [client.banner]
    try:
        replies.append(await client.cmd("EHLO attacker.example"))
        await client.send(
            f"MAIL FROM:<{token}@good.test>\r\nRCPT TO:<{rcpt}>\r\n"
            "RCPT TO:<victim@elsewhere.example>\r\nDATA\r\n".encode()
        )
        replies += [await client.reply() for _ in range(4)]
        replies.append(
            await client.cmd(
                b"X-Smtpconn-Tag: authenticated; mode=bidirectional\r\n"
                b"x-smtpconn-tag:\r\n authenticated\r\n"
                b"From: someone@good.test\r\nSubject: " + token.encode() + b"\r\n\r\n"
                b"body " + token.encode() + b"\r\n.\r\n"
            )
        )
        await client.send(b"RSET\r\nNOOP \x00\x1b[2J\r\nVRFY root\r\nBDAT 5\r\nQUIT\r\n")
        replies += [await client.reply() for _ in range(5)]
    finally:
        await client.close()
    return [re.sub(r"\b\d{20}\.[0-9a-f]{8}\b|\b[0-9a-f]{8}\b", "<id>", r) for r in replies]


async def test_a_child_served_session_answers_hostile_bytes_as_the_main_does(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    relay = _start(relay_process)
    rcpt = relay_env.addresses["outbound-only"]
    transcripts: dict[str, list[str]] = {}
    tokens: dict[str, str] = {}
    for _ in range(ATTEMPTS):
        token = f"hostile-{uuid.uuid4().hex[:12]}"
        replies = await _hostile_session(relay.inbound_port, rcpt, token)
        shard = None
        for _ in range(100):
            shard = _shard_of(relay, token, "inbound.accepted")
            if shard is not None:
                break
            await asyncio.sleep(0.05)
        assert shard is not None, replies
        transcripts.setdefault(shard, replies)
        tokens.setdefault(shard, token)
        if len(transcripts) == 2:
            break
    assert set(transcripts) == {"0", "1"}, "no session reached both processes"
    assert transcripts["1"] == transcripts["0"]
    assert transcripts["1"][3].startswith("250") and transcripts["1"][4].startswith("550")
    for token in tokens.values():
        raw = await asyncio.to_thread(relay_env.wait_for_sink, token)
        head = raw.split(b"\n\n", 1)[0]
        assert head.lower().count(b"x-smtpconn-tag") == 1, head
        assert b"\nX-Smtpconn-Tag: unauthenticated; mode=outbound-only" in head
    log = relay.log.read_text(errors="replace")
    assert "\x1b" not in log and "\x00" not in log


async def _wrong_login(lab: Lab, port: int) -> str:
    client = await RawSmtp.connect(port)
    try:
        await client.greet(lab.ca_file)
        return await client.login(INBOUND_USER, "not-the-password")
    finally:
        await client.close()


async def _right_login(lab: Lab, port: int) -> str:
    client = await RawSmtp.connect(port)
    try:
        await client.greet(lab.ca_file)
        return await client.login(INBOUND_USER, INBOUND_PASS)
    finally:
        await client.close()


async def test_an_auth_brute_force_is_limited_in_every_process(
    lab: Lab, relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    relay = _start(relay_process)
    for _ in range(ATTEMPTS):
        await _wrong_login(lab, relay.inbound_port)
        log = relay.log.read_text()
        if _shard_of(relay, "", "auth.blocked") is not None and all(
            re.search(rf"event=auth\.blocked .*shard={k}\b", log) for k in (0, 1)
        ):
            break
    log = relay.log.read_text()
    blocked = {k for k in (0, 1) if re.search(rf"event=auth\.blocked .*shard={k}\b", log)}
    assert blocked == {0, 1}, "a process let the brute force go on"
    # auth_failures_allowed = 5 (the default) for the relay: ceil(5 / 2) = 3 per process.
    assert log.count("event=auth.failed") <= 6
    # Blocked everywhere: even the right password is refused, whichever process answers.
    for _ in range(8):
        assert (await _right_login(lab, relay.inbound_port)).startswith("454 4.7.0")
