"""An asyncio SMTP load generator (aiosmtplib), used identically against the relay and Postfix.

Each of ``senders`` concurrent senders opens sessions one after another: connect, EHLO,
STARTTLS (certificate verified against the given CA, for the address connected to: both
servers' certificates name 127.0.0.1), EHLO, AUTH, then ``per_session`` messages
(MAIL, RCPT, DATA), then QUIT, until the scenario's ``messages`` are all sent. A message's
*latency* is the time from the moment its sender starts on it until the server's ``250`` after
DATA: for the first message of a session that includes connecting, TLS and AUTH, which is what a
sending MTA waits for. Every message carries a unique token so deliveries can be counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from dataclasses import dataclass, field

MESSAGE_SIZE = 10 * 1024


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls_context: ssl.SSLContext
    username: str
    password: str
    sender: str
    recipient: str


@dataclass
class LoadResult:
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    started_at: float = 0.0  # time.monotonic() at the start
    tokens: list[str] = field(default_factory=list)


def build_message(sender: str, recipient: str, token: str, size: int = MESSAGE_SIZE) -> bytes:
    head = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: bench {token}\r\n"
        f"Message-ID: <{token}@bench.test>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head + body + b"\r\n"


async def _sender(
    target: Target,
    quota: list[int],
    per_session: int,
    result: LoadResult,
    timeout: float,
) -> None:
    import aiosmtplib

    while quota[0] > 0:
        batch = min(per_session, quota[0])
        quota[0] -= batch
        began = time.perf_counter()
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            start_tls=True,
            tls_context=target.tls_context,
            username=target.username,
            password=target.password,
            timeout=timeout,
        )
        try:
            await client.connect()
            for _ in range(batch):
                token = uuid.uuid4().hex
                msg = build_message(target.sender, target.recipient, token)
                await client.sendmail(target.sender, [target.recipient], msg)
                now = time.perf_counter()
                result.latencies.append(now - began)
                result.tokens.append(token)
                result.sent += 1
                began = now
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            client.close()


async def run_load(
    target: Target,
    *,
    messages: int,
    senders: int,
    per_session: int,
    timeout: float = 30.0,
) -> LoadResult:
    result = LoadResult(started_at=time.monotonic())
    quota = [messages]
    start = time.perf_counter()
    await asyncio.gather(
        *(_sender(target, quota, per_session, result, timeout) for _ in range(senders))
    )
    result.wall = time.perf_counter() - start
    return result


async def hold_idle(
    host: str, port: int, count: int, *, greeting_timeout: float = 10.0
) -> tuple[list[asyncio.StreamWriter], int]:
    """Open ``count`` TCP connections that read the greeting and then stay silent.

    Returns the open writers (close them to end the connections) and how many were greeted
    with a 220 within ``greeting_timeout`` (a server with a process limit greets fewer).
    """
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def connect() -> None:
        with contextlib.suppress(OSError, TimeoutError):
            opened.append(
                await asyncio.wait_for(asyncio.open_connection(host, port), greeting_timeout)
            )

    # In waves, so the listen backlog is never what limits the count.
    for i in range(0, count, 100):
        await asyncio.gather(*(connect() for _ in range(min(100, count - i))))

    async def greeted(reader: asyncio.StreamReader) -> bool:
        try:
            return (await reader.readline()).startswith(b"220")
        except (OSError, ValueError):
            return False

    tasks = [asyncio.ensure_future(greeted(r)) for r, _ in opened]
    done, pending = await asyncio.wait(tasks, timeout=greeting_timeout) if tasks else (set(), set())
    for t in pending:
        t.cancel()
    return [w for _, w in opened], sum(1 for t in done if t.result())
