"""``[relay] processes = 2`` share one accept queue: a process takes a connection only while it
has room (its share of ``max_sessions``), so the whole relay greets as many sessions as the
administrator allows, whichever process the connections land on; beyond that the main answers
``421 4.3.2``. (With SO_REUSEPORT the kernel's hash could put three of four on one process,
which refused the third while the other had room.)"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable

from tests.integration.security.rawsmtp import RawSmtp

from .conftest import RelayEnv, RelayProcess, write_profile

MAX_SESSIONS = 4  # 2 per process


def start_two(
    env: RelayEnv, relay_process: Callable[..., RelayProcess], **relay: object
) -> RelayProcess:
    """The relay with 2 processes and ``relay`` added to its [relay] table, once the child listens."""
    data = tomllib.loads(env.profile.read_text())
    data["relay"].update(max_connections_per_ip=100, **relay)
    write_profile(env.profile, data["addresses"], data["relay"])
    process = relay_process(args=["--processes", "2"])
    deadline = time.monotonic() + 20
    while "event=relay.shard-ready" not in process.log.read_text():
        assert time.monotonic() < deadline, process.log.read_text()
        time.sleep(0.05)
    return process


async def send_one(client: RawSmtp, rcpt: str) -> str:
    """One message on an open plain session; its token."""
    token = f"accept-{uuid.uuid4().hex[:12]}"
    assert (await client.cmd("EHLO client.example")).startswith("250")
    assert (await client.cmd(f"MAIL FROM:<{token}@good.test>")).startswith("250")
    assert (await client.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
    assert (await client.cmd("DATA")).startswith("354")
    body = f"From: someone@good.test\r\nSubject: {token}\r\n\r\n{token}\r\n.\r\n"
    assert (await client.cmd(body.encode())).startswith("250")
    return token


def shards_of(relay: RelayProcess, tokens: list[str]) -> Counter[str]:
    """How many of ``tokens`` each process (shard=) accepted, by its inbound.accepted lines."""
    served: Counter[str] = Counter()
    for line in relay.log.read_text(errors="replace").splitlines():
        if "event=inbound.accepted " in line and any(t in line for t in tokens):
            found = re.search(r" shard=(\d+)", line)
            served[found.group(1) if found else "?"] += 1
    return served


async def wait_sink(env: RelayEnv, tokens: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = b"".join(env.sink_messages())
        if all(t.encode() in found for t in tokens):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not all of {tokens} reached the sink")


async def test_every_allowed_session_is_greeted_whichever_process_takes_it(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    relay = start_two(relay_env, relay_process, max_sessions=MAX_SESSIONS)
    rcpt = relay_env.addresses["outbound-only"]
    held = [await RawSmtp.connect(relay.inbound_port) for _ in range(MAX_SESSIONS)]
    assert [c.banner[:3] for c in held] == ["220"] * MAX_SESSIONS
    # Every process is full: the main takes the next one and refuses it.
    extra = await RawSmtp.connect(relay.inbound_port)
    assert extra.banner.startswith("421 4.3.2"), extra.banner
    await extra.close()
    refusals = [
        line
        for line in relay.log.read_text().splitlines()
        if "event=session.refused " in line and "too many sessions" in line
    ]
    assert len(refusals) == 1 and " shard=0 " in refusals[0] + " ", refusals

    tokens = [await send_one(c, rcpt) for c in held]
    await wait_sink(relay_env, tokens)
    # each process held exactly its share
    assert shards_of(relay, tokens) == Counter({"0": 2, "1": 2})

    # A session that ends makes room again, on whichever process it was.
    await held.pop().close()
    again = None
    for _ in range(50):  # the closed session ends on the relay's side a moment later
        again = await RawSmtp.connect(relay.inbound_port)
        if again.banner.startswith("220"):
            break
        await again.close()
        await asyncio.sleep(0.1)
    assert again is not None and again.banner.startswith("220"), again and again.banner
    for client in [*held, again]:
        await client.close()


async def test_a_child_takes_connections_only_up_to_its_share(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    """20 simultaneous sessions with room for all: both processes serve, every one is greeted
    and delivers (the split itself is the benchmark's business, not a test's)."""
    relay = start_two(relay_env, relay_process, max_sessions=20)
    rcpt = relay_env.addresses["outbound-only"]
    held = await asyncio.gather(*(RawSmtp.connect(relay.inbound_port) for _ in range(20)))
    assert [c.banner[:3] for c in held] == ["220"] * 20
    tokens = list(await asyncio.gather(*(send_one(c, rcpt) for c in held)))
    await wait_sink(relay_env, tokens)
    served = shards_of(relay, tokens)
    assert served.total() == 20 and set(served) == {"0", "1"}, served
    assert max(served.values()) <= 10, served  # a share each: 10
    for client in held:
        await client.close()
