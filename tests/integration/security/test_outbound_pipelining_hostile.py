"""The pipelining outbound client against a server that does what Postfix cannot be made to do:
replies nobody asked for, a final reply sent before the message, replies split across reads.

Postfix covers the protocol itself (tests/integration/relay/test_relay_pipelining.py); this
fake server (STARTTLS with a throw-away certificate, AUTH accepted, PIPELINING offered) stands
for a broken or hostile peer inside the TLS session. What is asserted: nothing is delivered
twice, nothing is marked delivered that the server did not accept after the message, and a
connection out of step is never used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smtpconn.smtp.delivery import DeliverySession
from smtpconn.smtp.failures import FailureKind, StageName
from smtpconn.smtp.session import ServerSpec, secure_client_context
from smtpconn.smtp.vocab import AuthMechanism, Security
from tests.integration.tls_auth.tiny_smtp import make_cert

HOST = "hostile.test"
MESSAGE = b"From: support@good.test\r\nTo: bob@good.test\r\nSubject: hi\r\n\r\nbody\r\n"


@dataclass
class Script:
    """How the server misbehaves, per connection (index from 0)."""

    # after the final reply to the first message: more replies nobody asked for
    extra_after_final: bytes = b""
    # answer DATA with 354 *and* a final 250 in one write, then (after the message) this
    early_final: bytes | None = None
    # write every reply in pieces of this many bytes, each piece its own write
    split: int = 0
    # the reply to the end of the message, instead of a 250
    final: bytes | None = None


@dataclass
class PipelineServer:
    cert: tuple[Path, Path]
    script: Script
    port: int = 0
    connections: int = 0
    messages: list[tuple[int, bytes]] = field(default_factory=list)  # (connection, message)
    commands: list[tuple[int, str]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.cert)
        self._context = context
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        # On the server's own loop: asyncio's Server is not thread-safe (closing it from this
        # thread raced its connection handling: "'NoneType' object is not iterable").
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        tls = False

        async def send(data: bytes) -> None:
            split = self.script.split if tls else 0  # the replies inside TLS
            pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                if split:
                    await asyncio.sleep(0.002)

        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            await send(b"220 hostile.test ESMTP\r\n")
            while line := await reader.readline():
                verb = line.decode("latin-1").strip().split(" ")[0].upper()
                self.commands.append((index, verb))
                if verb == "EHLO":
                    offers = b"250-STARTTLS\r\n" if not tls else b"250-AUTH PLAIN\r\n"
                    await send(
                        b"250-hostile.test\r\n250-PIPELINING\r\n" + offers + b"250 8BITMIME\r\n"
                    )
                elif verb == "STARTTLS":
                    await send(b"220 go ahead\r\n")
                    await writer.start_tls(self._context)
                    tls = True
                elif verb == "AUTH":
                    await send(b"235 2.7.0 ok\r\n")
                elif verb in ("MAIL", "RCPT", "RSET"):
                    await send(b"250 2.0.0 ok\r\n")
                elif verb == "DATA":
                    await self._data(index, reader, send)
                elif verb == "QUIT":
                    await send(b"221 bye\r\n")
                    break
                else:
                    await send(b"502 5.5.2 no\r\n")
        writer.close()

    async def _data(self, index: int, reader: asyncio.StreamReader, send: object) -> None:
        assert callable(send)
        early = self.script.early_final
        if early is not None:
            await send(b"354 go ahead\r\n250 2.0.0 Ok: queued as EARLY\r\n")
        else:
            await send(b"354 go ahead\r\n")
        body = await reader.readuntil(b"\r\n.\r\n")
        self.messages.append((index, body))
        if early is not None:
            await send(early)
            return
        if self.script.final is not None:
            await send(self.script.final)
            return
        extra = self.script.extra_after_final if len(self.messages) == 1 else b""
        await send(f"250 2.0.0 Ok: queued as Q{len(self.messages)}\r\n".encode() + extra)


@contextlib.contextmanager
def pipeline_server(tmp_path: Path, script: Script) -> Iterator[PipelineServer]:
    server = PipelineServer(make_cert(tmp_path, "hostile", HOST), script)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _session(port: int) -> DeliverySession:
    return DeliverySession(
        ServerSpec(HOST, port, Security.STARTTLS, AuthMechanism.AUTO, "relay"),
        "secret",
        tls_context=secure_client_context(None, insecure=True),
        ehlo_name="relay.helpdesk.test",
        timeout=5,
        address="127.0.0.1",
    )


async def _send_two(port: int) -> list[object]:
    session = _session(port)
    try:
        return [
            await session.send("support@good.test", ["bob@good.test"], MESSAGE),
            await session.send("support@good.test", ["bob@good.test"], MESSAGE + b"2\r\n"),
        ]
    finally:
        await session.close()


async def test_replies_nobody_asked_for_retire_the_connection(tmp_path: Path) -> None:
    # Three positive replies after the first message's 250: read as the next group's replies
    # they would answer MAIL, RCPT and DATA before the server saw them.
    extra = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"
    with pipeline_server(tmp_path, Script(extra_after_final=extra)) as server:
        first, second = await _send_two(server.port)
    assert first.delivered and second.delivered  # type: ignore[attr-defined]
    # The second message went on a fresh connection, once; the first never saw another MAIL.
    assert [(c, b.endswith(b"2\r\n.\r\n")) for c, b in server.messages] == [(0, False), (1, True)]
    assert [v for c, v in server.commands if c == 0 and v == "MAIL"] == ["MAIL"]


async def test_a_final_reply_before_the_message_is_not_believed(tmp_path: Path) -> None:
    # The server's real verdict on the message (after it) is a refusal; a client that sends the
    # message anyway reads the early 250 as the verdict and marks the message delivered.
    script = Script(early_final=b"554 5.7.1 rejected after all\r\n")
    with pipeline_server(tmp_path, script) as server:
        session = _session(server.port)
        try:
            result = await session.send("support@good.test", ["bob@good.test"], MESSAGE)
        finally:
            await session.close()
    assert not result.delivered and server.messages == []  # the message was never sent
    [outcome] = result.recipients
    assert not outcome.accepted and not outcome.permanent  # retried later, never a bounce
    assert result.failure is not None and result.failure.stage is StageName.DATA
    assert result.failure.kind is FailureKind.PROTOCOL
    assert not session.connected


async def test_replies_split_across_reads_are_mapped_in_order(tmp_path: Path) -> None:
    with pipeline_server(tmp_path, Script(split=3)) as server:
        session = _session(server.port)
        try:
            result = await session.send(
                "support@good.test", ["bob@good.test", "alice@good.test"], MESSAGE
            )
            again = await session.send("support@good.test", ["bob@good.test"], MESSAGE)
        finally:
            await session.close()
    assert result.delivered and again.delivered
    assert result.queue_id == "Q1" and again.queue_id == "Q2"
    assert [c for c, _ in server.messages] == [0, 0]  # one connection, each message once


async def test_an_endless_reply_line_is_a_protocol_failure_not_a_crash(tmp_path: Path) -> None:
    # One reply line past the stream's 64 KiB line limit: asyncio raises ValueError, which
    # escaped the client, so the worker retried the message every poll without back-off.
    script = Script(final=b"250 2.0.0 " + b"x" * 70_000 + b"\r\n")
    with pipeline_server(tmp_path, script) as server:
        session = _session(server.port)
        try:
            result = await session.send("support@good.test", ["bob@good.test"], MESSAGE)
        finally:
            await session.close()
    assert not result.delivered
    [outcome] = result.recipients
    assert not outcome.accepted and not outcome.permanent  # retried later, never a bounce
    assert result.failure is not None and result.failure.kind is FailureKind.PROTOCOL
    assert result.failure.stage is StageName.DATA
    assert not session.connected
