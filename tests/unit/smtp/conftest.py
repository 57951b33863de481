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
            tls = False

            async def say(text: str) -> None:
                writer.write(text.encode() + b"\r\n")
                await writer.drain()

            await say(script.banner)
            if not script.banner.startswith("220"):
                writer.close()
                return
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                received.append(line)
                verb = line.split(" ")[0].upper()
                if verb == "EHLO":
                    caps = ["250-fake.test"]
                    if script.starttls and not tls:
                        caps.append("250-STARTTLS")
                    if tls or script.auth_before_tls:
                        caps.append("250-AUTH PLAIN LOGIN")
                    caps.append("250 8BITMIME")
                    await say("\r\n".join(caps))
                elif verb == "STARTTLS":
                    await say("220 go ahead" + script.after_starttls)
                    try:
                        await writer.start_tls(server_ctx)
                    except (ssl.SSLError, ConnectionError):
                        break  # the client walked away from the handshake
                    tls = True
                elif verb == "AUTH":
                    await say("235 ok" if script.auth_ok else "535 5.7.8 authentication failed")
                elif verb == "MAIL":
                    await say("250 ok")
                elif verb == "RCPT":
                    rcpt = line[len("RCPT TO:<") : line.index(">")]
                    await say(script.rcpt_replies.get(rcpt, "250 ok"))
                elif verb == "DATA":
                    await say("354 go")
                    body = b""
                    while (chunk := await reader.readline()) != b".\r\n":
                        body += chunk
                    messages.append(body)
                    await say(script.data_reply)
                elif verb == "QUIT":
                    await say("221 bye")
                    break
                else:
                    await say("502 unknown")
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return FakeServer(port, cert, received, messages)

    yield start
    for s in servers:
        s.close()
