"""A scripted in-process SMTP server, for testing the client policy without Postfix."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Script:
    banner: str = "220 fake.test ESMTP"
    starttls: bool = True
    auth_before_tls: bool = False
    auth_ok: bool = True
    auth_mechanisms: str = "PLAIN LOGIN"
    # A SASL error challenge (RFC 7628 3.2.2) sent as 334 instead of a final refusal; the
    # client's answer to it is kept in ``received`` and then 535 follows.
    auth_challenge: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 Ok: queued as ABC123"
    # Clear-text replies written in the same segment as the 220 to STARTTLS, as a middlebox
    # injecting them would (RFC 3207 §5).
    after_starttls: str = ""


@dataclass
class FakeServer:
    port: int
    ca_file: Path
    received: list[str]
    messages: list[bytes]


def _cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("fake.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _FakeSession:
    """One connection to the fake server: a reply per verb, as the script says."""

    def __init__(
        self,
        script: Script,
        server_ctx: ssl.SSLContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        received: list[str],
        messages: list[bytes],
    ) -> None:
        self.script, self.server_ctx = script, server_ctx
        self.reader, self.writer = reader, writer
        self.received, self.messages = received, messages
        self.tls = False

    async def say(self, text: str) -> None:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()

    async def run(self) -> None:
        await self.say(self.script.banner)
        if self.script.banner.startswith("220"):
            while line := (await self.reader.readline()).decode().rstrip("\r\n"):
                self.received.append(line)
                verb = line.split(" ")[0].upper()
                if not await self.answer(verb, line):
                    break
        self.writer.close()

    async def answer(self, verb: str, line: str) -> bool:
        """Reply to one command; False ends the session."""
        if verb == "EHLO":
            await self.ehlo()
        elif verb == "STARTTLS":
            return await self.starttls()
        elif verb == "AUTH" and self.script.auth_challenge is not None:
            await self.say(f"334 {self.script.auth_challenge}")
            self.received.append((await self.reader.readline()).decode().rstrip("\r\n"))
            await self.say("535 5.7.8 authentication failed")
        elif verb == "AUTH":
            await self.say("235 ok" if self.script.auth_ok else "535 5.7.8 authentication failed")
        elif verb == "MAIL":
            await self.say("250 ok")
        elif verb == "RCPT":
            rcpt = line[len("RCPT TO:<") : line.index(">")]
            await self.say(self.script.rcpt_replies.get(rcpt, "250 ok"))
        elif verb == "DATA":
            await self.data()
        elif verb == "QUIT":
            await self.say("221 bye")
            return False
        else:
            await self.say("502 unknown")
        return True

    async def ehlo(self) -> None:
        caps = ["250-fake.test"]
        if self.script.starttls and not self.tls:
            caps.append("250-STARTTLS")
        if self.tls or self.script.auth_before_tls:
            caps.append(f"250-AUTH {self.script.auth_mechanisms}")
        caps.append("250 8BITMIME")
        await self.say("\r\n".join(caps))

    async def starttls(self) -> bool:
        await self.say("220 go ahead" + self.script.after_starttls)
        try:
            await self.writer.start_tls(self.server_ctx)
        except (ssl.SSLError, ConnectionError):
            return False  # the client walked away from the handshake
        self.tls = True
        return True

    async def data(self) -> None:
        await self.say("354 go")
        body = b""
        while (chunk := await self.reader.readline()) != b".\r\n":
            body += chunk
        self.messages.append(body)
        await self.say(self.script.data_reply)


@pytest.fixture
async def fake_smtp(tmp_path: Path) -> AsyncIterator[Callable[[Script], Awaitable[FakeServer]]]:
    cert, key = _cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> FakeServer:
        received: list[str] = []
        messages: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _FakeSession(script, server_ctx, reader, writer, received, messages).run()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return FakeServer(port, cert, received, messages)

    yield start
    for s in servers:
        s.close()
