"""The ``mta-sts.policy`` check's I/O: one HTTPS GET of ``https://mta-sts.<domain>/.well-known/
mta-sts.txt`` the way RFC 8461 §3.3 says senders fetch it: the name resolved through the run's
resolver (the same answers senders' resolvers give), the certificate verified for that name, no
redirect followed, at most 64 KB read. The verdict is sts_policy.py's.

``Settings.mta_sts_port`` (443; ``SMTPCONN_MTA_STS_PORT``) exists so that tests can serve
policies from an unprivileged port; senders always use 443.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from smtpconn.checks.common import in_own_thread
from smtpconn.checks.model import CheckContext
from smtpconn.checks.sts_policy import MAX_POLICY_BYTES, POLICY_PATH, FetchFailure, PolicyFetch
from smtpconn.dns import DnsOutcome
from smtpconn.errors import SmtpconnFailure
from smtpconn.net import make_client_tls_context

_MAX_HEAD = 16 * 1024


class _Unreadable(SmtpconnFailure):
    """The peer's bytes are not an HTTP/1.x response we can read."""


async def fetch_policy(ctx: CheckContext, domain: str) -> PolicyFetch:
    host = f"mta-sts.{domain}"
    a, aaaa = await asyncio.gather(ctx.resolver.query(host, "A"), ctx.resolver.query(host, "AAAA"))
    addresses = a.records + aaaa.records
    if not addresses:
        errors = [x.error for x in (a, aaaa) if x.outcome is DnsOutcome.ERROR]
        if errors:
            return PolicyFetch(host, FetchFailure.DNS_ERROR, "; ".join(errors))
        return PolicyFetch(host, FetchFailure.NO_ADDRESS, f"A {a.outcome}, AAAA {aaaa.outcome}")
    context = await _shared_context(ctx)
    failures: list[PolicyFetch] = []
    for address in addresses:
        fetched = await _fetch_from(ctx, host, address, context)
        if fetched.failure in (None, FetchFailure.TLS, FetchFailure.PROTOCOL):
            return fetched  # the server answered: its answer is the verdict
        failures.append(fetched)
    return failures[0]


async def _shared_context(ctx: CheckContext) -> ssl.SSLContext:
    """One context for every policy fetch of the run, built in a thread of its own: loading the
    system's trust store costs 40-80 ms of CPU, once per domain on the event loop before."""
    settings = ctx.settings
    return await ctx.once(
        ("sts-fetch.context",),
        lambda: in_own_thread(
            lambda: make_client_tls_context(settings.ca_file, insecure=settings.insecure)
        ),
    )


async def _fetch_from(
    ctx: CheckContext, host: str, address: str, context: ssl.SSLContext
) -> PolicyFetch:
    port = ctx.settings.mta_sts_port
    where = f"{address} port {port}"
    try:
        return await asyncio.wait_for(_get(host, address, port, context), ctx.settings.timeout)
    except TimeoutError:
        return PolicyFetch(host, FetchFailure.TIMEOUT, f"{where}: no answer in time")
    except ssl.SSLCertVerificationError as exc:
        return PolicyFetch(host, FetchFailure.TLS, f"{where}: {exc.verify_message}")
    except ssl.SSLError as exc:
        return PolicyFetch(host, FetchFailure.TLS, f"{where}: {exc.reason or exc}")
    except ConnectionRefusedError:
        return PolicyFetch(host, FetchFailure.REFUSED, f"{where}: connection refused")
    except (_Unreadable, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return PolicyFetch(host, FetchFailure.PROTOCOL, f"{where}: {exc or type(exc).__name__}")
    except OSError as exc:
        return PolicyFetch(host, FetchFailure.UNREACHABLE, f"{where}: {exc.strerror or exc}")


async def _get(host: str, address: str, port: int, context: ssl.SSLContext) -> PolicyFetch:
    reader, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=host, limit=_MAX_HEAD
    )
    try:
        writer.write(
            f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: smtpconn-verify\r\n"
            "Accept: text/plain\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        await writer.drain()
        status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        body, too_large = await _read_body(reader, headers)
        return PolicyFetch(host, None, "", status, headers, body, too_large)
    finally:
        writer.close()
        # A server that drops the connection without close_notify is not our finding.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased; a repeated header keeps its first value)."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise _Unreadable(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.setdefault(name.strip().lower(), value.strip())
    return int(code), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[bytes, bool]:
    """At most MAX_POLICY_BYTES of the body, and whether there was more."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length = headers.get("content-length", "")
    if length.isdigit():
        if int(length) > MAX_POLICY_BYTES:
            return b"", True
        return await reader.readexactly(int(length)), False
    body = await reader.read(MAX_POLICY_BYTES + 1)
    while len(body) <= MAX_POLICY_BYTES:
        more = await reader.read(MAX_POLICY_BYTES + 1 - len(body))
        if not more:
            break
        body += more
    return body[:MAX_POLICY_BYTES], len(body) > MAX_POLICY_BYTES


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    body = b""
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise _Unreadable(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            return body, False
        if len(body) + size > MAX_POLICY_BYTES:
            return body, True
        body += await reader.readexactly(size)
        await reader.readexactly(2)
