"""Durability under repeated crashes: SIGKILL the relay at 20 random moments while messages
stream in, restart it on the same port each time; every acknowledged (``250``) message reaches
the sink exactly once, and no message reaches it twice. The sharded variant (``processes = 2``)
kills a random relay process each time: the main (its child then stops on its own and the main
is started again) or the shard child (the main starts it again).

The suite sends 2,000 messages (CI-friendly); the issue's full run of 10,000 is opt-in:
``SMTPCONN_KILL_TEST_MESSAGES=10000 pytest tests/integration/relay/test_relay_kill.py``
(benchmarks/README.md reports it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from .conftest import RelayEnv, RelayProcess

MESSAGES = int(os.environ.get("SMTPCONN_KILL_TEST_MESSAGES", "2000"))
KILLS = 20
SENDERS = 8
TOKEN = re.compile(rb"kill-\d+-[0-9a-f]{8}")


@dataclass
class Stream:
    tokens: list[str]
    acked: list[str] = field(default_factory=list)
    next_index: int = 0
    port: int = 0
    running: bool = True

    def take(self) -> str | None:
        if self.next_index >= len(self.tokens):
            return None
        self.next_index += 1
        return self.tokens[self.next_index - 1]


def _message(rcpt: str, token: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "someone@good.test"
    message["To"] = rcpt
    message["Subject"] = token
    message.set_content(f"kill test {token}\n")
    return message


async def _connect(stream: Stream) -> aiosmtplib.SMTP:
    while True:  # the relay may be dead or restarting: try until it listens again
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=stream.port, start_tls=False, timeout=10
        )
        try:
            await client.connect()
            return client
        except (aiosmtplib.SMTPException, OSError):
            await asyncio.sleep(0.05)


async def _sender(stream: Stream, rcpt: str) -> None:
    client = await _connect(stream)
    while (token := stream.take()) is not None:
        try:
            await client.send_message(_message(rcpt, token))
        except (aiosmtplib.SMTPException, OSError):
            # Killed under us: this message was not acknowledged and is not sent again (a
            # resend would be a duplicate the client made, not the relay).
            client.close()
            client = await _connect(stream)
            continue
        stream.acked.append(token)  # only after the 250
    client.close()


# Kills one relay process; returns the relay running afterwards and which kind it killed.
Kill = Callable[[RelayProcess, random.Random], Awaitable[tuple[RelayProcess, str]]]


async def _killer(stream: Stream, first: RelayProcess, kill: Kill) -> Counter[str]:
    rng = random.Random()
    points = sorted(rng.sample(range(MESSAGES // 40, MESSAGES - MESSAGES // 40), KILLS))
    current, kills = first, Counter[str]()
    for point in points:
        while len(stream.acked) < point and stream.next_index < len(stream.tokens):
            await asyncio.sleep(0.002)
        await asyncio.sleep(rng.uniform(0, 0.01))  # anywhere in a transaction or a hand-over
        current, kind = await kill(current, rng)
        kills[kind] += 1
    return kills


def _kill_main(
    relay_process: Callable[..., RelayProcess], port: int, args: Sequence[str] = ()
) -> Kill:
    async def kill(current: RelayProcess, rng: random.Random) -> tuple[RelayProcess, str]:
        os.kill(current.process.pid, signal.SIGKILL)
        await asyncio.to_thread(current.process.wait, 10)
        assert current.process.returncode == -signal.SIGKILL
        return await asyncio.to_thread(relay_process, inbound_port=port, args=args), "main"

    return kill


_CHILD = re.compile(r"event=relay\.shard-started shard=1 pid=(\d+)")


def _child_pid(relay: RelayProcess) -> int | None:
    found = _CHILD.findall(relay.log.read_text(errors="replace"))
    return int(found[-1]) if found else None


def _kill_any(relay_process: Callable[..., RelayProcess], port: int) -> Kill:
    """Kills the main or its shard child, at random."""
    main = _kill_main(relay_process, port, ["--processes", "2"])

    async def kill(current: RelayProcess, rng: random.Random) -> tuple[RelayProcess, str]:
        child = _child_pid(current)
        if child is None or rng.random() < 0.5:
            return await main(current, rng)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 30  # the main starts it again after its back-off (<= 10 s)
        while _child_pid(current) == child and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert _child_pid(current) != child, "the main did not start its child again"
        return current, "child"

    return kill


def _sink_counts(env: RelayEnv) -> Counter[bytes]:
    counts: Counter[bytes] = Counter()
    for raw in env.sink_messages():
        found = TOKEN.search(raw)
        if found:
            counts[found.group()] += 1
    return counts


async def test_sigkill_20_times_loses_and_duplicates_nothing(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    first = relay_process()
    kills = await _stream_through_kills(
        relay_env, first, _kill_main(relay_process, first.inbound_port)
    )
    assert kills == Counter(main=KILLS)


async def test_sigkill_of_any_of_two_relay_processes_loses_and_duplicates_nothing(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    first = relay_process(args=["--processes", "2"])
    kills = await _stream_through_kills(
        relay_env, first, _kill_any(relay_process, first.inbound_port)
    )
    assert kills.total() == KILLS and kills["main"] and kills["child"], kills


async def _stream_through_kills(
    relay_env: RelayEnv, first: RelayProcess, kill: Kill
) -> Counter[str]:
    """MESSAGES messages from SENDERS sessions while ``kill`` strikes KILLS times; every
    acknowledged message must reach the sink exactly once."""
    rcpt = relay_env.addresses["outbound-only"]
    stream = Stream([f"kill-{i}-{os.urandom(4).hex()}" for i in range(MESSAGES)])
    stream.port = first.inbound_port
    started = time.monotonic()
    kills, *_ = await asyncio.gather(
        _killer(stream, first, kill), *(_sender(stream, rcpt) for _ in range(SENDERS))
    )
    acked = {t.encode() for t in stream.acked}
    assert len(acked) == len(stream.acked)
    counts: Counter[bytes] = Counter()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the last relay delivers what the others left
        counts = _sink_counts(relay_env)
        if acked <= counts.keys():
            break
        await asyncio.sleep(0.2)
    lost = acked - counts.keys()
    duplicated = {t: n for t, n in counts.items() if n > 1}
    print(
        f"kill test: {MESSAGES} messages, {dict(kills)} kills, {len(acked)} acknowledged, "
        f"{len(counts)} in the sink, {time.monotonic() - started:.1f} s"
    )
    assert not lost, f"{len(lost)} acknowledged message(s) lost"
    assert not duplicated, f"{len(duplicated)} message(s) delivered more than once"
    assert len(acked) >= MESSAGES - 10 * KILLS * SENDERS  # the stream really went on
    return kills
