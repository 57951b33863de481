"""A deliberately misbehaving SMTP server for the TLS/AUTH scenarios no real MTA is easily
configured into: STARTTLS advertised but every handshake broken, a 421 greeting, XOAUTH2 as the
only mechanism, a self-signed or not-yet-valid certificate.

asyncio on 127.0.0.1, a free port, one thread with its own loop; ``stop()`` closes everything it
opened. It records every line it received so tests can assert what a client sent (and that no
credential ever went out in clear text).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Behaviour:
    banner: str = "220 tiny.test ESMTP"
    #: "ok": a real TLS handshake with ``cert``; "garbage": answer 220 then send bytes that are
    #: not TLS; "close": answer 220 then hang up; "454": refuse it as Postfix does when it cannot
    #: load its certificate or key.
    starttls: str = "ok"
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    cert: Path | None = None
    key: Path | None = None
    #: A ready server context (versions, ciphers, chain, SNI callback); overrides cert/key.
    context: ssl.SSLContext | None = None


@dataclass
class TinySmtp:
    behaviour: Behaviour
    host: str = "127.0.0.1"
    port: int = 0
    received: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> TinySmtp:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            # Connection handlers still waiting for a client finish here, on a running loop,
            # rather than when the garbage collector closes them on a closed one.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="tiny-smtp", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("tiny SMTP server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _tls_context(self) -> ssl.SSLContext:
        b = self.behaviour
        if b.context is not None:
            return b.context
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert b.cert is not None and b.key is not None
        context.load_cert_chain(b.cert, b.key)
        return context

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b = self.behaviour

        async def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            await send(b.banner)
            if not b.banner.startswith("220"):
                await reader.readline()  # a polite client says QUIT
                return
            tls = False
            while line := await reader.readline():
                text = line.decode("latin-1").rstrip("\r\n")
                self.received.append(("TLS " if tls else "CLEAR ") + text)
                verb = text.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    lines = ["250-tiny.test", "250-PIPELINING"]
                    if not tls:
                        lines.append("250-STARTTLS")
                    if tls and b.mechanisms:
                        lines.append("250-AUTH " + " ".join(b.mechanisms))
                    lines.append("250 8BITMIME")
                    for reply in lines:
                        await send(reply)
                elif verb == "STARTTLS" and not tls and b.starttls == "454":
                    await send("454 4.7.0 TLS not available due to local problem")
                elif verb == "STARTTLS" and not tls:
                    await send("220 2.0.0 go ahead")
                    if b.starttls == "close":
                        return
                    if b.starttls == "garbage":
                        writer.write(b"this is not TLS\r\n" * 4)
                        await writer.drain()
                        await reader.read(1024)
                        return
                    await writer.start_tls(self._tls_context())
                    tls = True
                elif verb == "AUTH":
                    await send("535 5.7.8 authentication failed")
                elif verb == "QUIT":
                    await send("221 bye")
                    return
                else:
                    await send("502 5.5.2 not here")
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            writer.close()


@contextmanager
def tiny_smtp(behaviour: Behaviour) -> Iterator[TinySmtp]:
    server = TinySmtp(behaviour).start()
    try:
        yield server
    finally:
        server.stop()


def make_cert(
    directory: Path,
    name: str,
    host: str,
    *,
    issuer: tuple[Path, Path] | None = None,
    not_before: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """A leaf for ``host``: self-signed when ``issuer`` (CA cert, CA key) is None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    start = not_before or now - dt.timedelta(days=1)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    if issuer is None:
        issuer_name, signer = subject, key
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer[0].read_bytes())
        ca_key = serialization.load_pem_private_key(issuer[1].read_bytes(), password=None)
        issuer_name, signer = ca_cert.subject, ca_key  # type: ignore[assignment]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
