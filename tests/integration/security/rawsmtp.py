"""A deliberately dumb SMTP client for attack tests: it sends exactly the bytes it is given, can
upgrade to TLS and log in, and reads replies as the relay wrote them. No escaping, no checks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from pathlib import Path


class RawSmtp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.banner = ""

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None
    ) -> RawSmtp:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname="relay.helpdesk.test" if tls else None
        )
        client = cls(reader, writer)
        client.banner = await client.reply()
        return client

    async def reply(self, timeout: float = 10.0) -> str:
        """One whole reply (all lines of a multi-line one), CRLFs kept out."""
        lines: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    lines.append("<closed>")
                    return "\n".join(lines)
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(text)
                if len(text) < 4 or text[3] != "-":
                    return "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, data: bytes | str, timeout: float = 10.0) -> str:
        """Send ``data`` (CRLF appended to a str, bytes sent as they are) and read one reply."""
        raw = data.encode() + b"\r\n" if isinstance(data, str) else data
        await self.send(raw)
        return await self.reply(timeout)

    async def starttls(self, ca_file: Path) -> None:
        reply = await self.cmd("STARTTLS")
        assert reply.startswith("220"), reply
        context = ssl.create_default_context(cafile=str(ca_file))
        await self.writer.start_tls(context, server_hostname="relay.helpdesk.test")

    async def login(self, username: str, password: str) -> str:
        blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {blob}")

    async def greet(
        self, ca_file: Path | None = None, login: tuple[str, str] | None = None
    ) -> None:
        """EHLO; with ``ca_file`` STARTTLS + EHLO; with ``login`` AUTH PLAIN (must succeed)."""
        assert (await self.cmd("EHLO attacker.example")).startswith("250")
        if ca_file is not None:
            await self.starttls(ca_file)
            assert (await self.cmd("EHLO attacker.example")).startswith("250")
        if login is not None:
            reply = await self.login(*login)
            assert reply.startswith("235"), reply

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()
