"""The lab's MTA-STS policy server: real HTTPS on 127.0.0.1 (a free port) answering
``GET /.well-known/mta-sts.txt`` for any ``mta-sts.<domain>``.

The certificate is issued on demand by the lab CA for the name the client asks for (SNI), so a
test's own zones are served like the lab's; ``cert`` pins one certificate instead (a wrong-host
or untrusted one, to test verification). Each host's answer is ``responses[host]`` (status,
Content-Type, headers, body), else ``default``: an enforced policy naming the lab's mail server,
the MX of every lab domain. The lab's NSD points ``mta-sts.<domain>`` at 127.0.0.1 and verify
is told the port through ``SMTPCONN_MTA_STS_PORT`` (``Settings.mta_sts_port``).

In a test run it is a thread of the process that started the lab. ``scripts/lab up`` starts the
lab and exits, so there it runs as its own process (``python -m lab.mta_sts CA_DIR DIR
PORT_FILE``, see :func:`main`), recorded with the other servers' pids and stopped by
``lab down``.
"""

from __future__ import annotations

import datetime as dt
import http.server
import signal
import ssl
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lab import zones
from lab.ca import CertFiles, LabCA, _key, _make_leaf, _write_cert, _write_key
from lab.proc import LOOPBACK

POLICY_PATH = "/.well-known/mta-sts.txt"


def policy_text(*mx: str, mode: str = "enforce", max_age: int = 86400) -> bytes:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class PolicyServer:
    def __init__(self, ca: LabCA, directory: Path, cert: CertFiles | None = None) -> None:
        self.ca = ca
        self.directory = directory
        self.cert = cert
        self.responses: dict[str, Response] = {}
        self.default = Response(policy_text(zones.MAIL_HOST))
        self.requests: list[str] = []  # Host of each request, in order
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._leaf_key: rsa.RSAPrivateKey | None = None
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the policy server is not running"
        return int(self._httpd.server_address[1])

    def start(self) -> PolicyServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), _handler(self))
        httpd.daemon_threads = True
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.cert is not None:
            base.load_cert_chain(str(self.cert.cert), str(self.cert.key))
        else:
            base.load_cert_chain(*self._issue(f"mta-sts.{zones.GOOD.name}"))
            base.sni_callback = self._pick_certificate
        httpd.socket = base.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _pick_certificate(
        self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
    ) -> None:
        if name:
            sock.context = self._context_for(name.lower())

    def _context_for(self, name: str) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(name)
            if context is None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self._issue(name))
                self._contexts[name] = context
            return context

    def _issue(self, name: str) -> tuple[str, str]:
        """A certificate for ``name`` from the lab CA (one key for all: RSA is the slow part)."""
        ca_key = serialization.load_pem_private_key(self.ca.ca_key.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.ca_cert.read_bytes())
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        if self._leaf_key is None:
            self._leaf_key = _key()
            _write_key(self._leaf_key, self.directory / "leaf.key")
        now = dt.datetime.now(dt.UTC)
        cert = _make_leaf(
            ca_key, ca_cert, self._leaf_key, [name], [], now - dt.timedelta(days=1),
            now + dt.timedelta(days=30),
        )  # fmt: skip
        path = self.directory / f"{name}.pem"
        _write_cert(cert, path)
        return str(path), str(self.directory / "leaf.key")


def _handler(server: PolicyServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").split(":")[0].lower()
            server.requests.append(host)
            response = server.responses.get(host, server.default)
            if self.path != POLICY_PATH:
                response = Response(b"not found\n", 404)
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the tests look at ``requests``; stderr stays quiet

    return Handler


def main(argv: list[str]) -> int:
    """Serve policies until SIGTERM; write the chosen port to PORT_FILE once listening."""
    ca_dir, directory, port_file = (Path(a) for a in argv)
    server = PolicyServer(LabCA.at(ca_dir), directory).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.port))
    tmp.replace(port_file)  # whole, or not there: the starter polls for it
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
