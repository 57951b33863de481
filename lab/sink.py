"""A throw-away SMTP listener (aiosmtpd) that records what it is sent and how.

Used as the target of Postfix's relay transport in tests ("does the customer's server relay to
the help desk only after AUTH over TLS?") and by benchmarks. It is NOT smtpconn's relay; it is
deliberately independent of it.

    with SmtpSink(ca.relay.cert, ca.relay.key, users={"hd": "pw"}) as sink:
        lab.set_relay_target("x.test", sink.host, sink.port, "hd", "pw")
        ...
        sink.wait_for_message(b"token")       # -> SinkMessage(tls=True, auth_login="hd", ...)
        sink.auth_attempts                    # every AUTH try: (login, success, over_tls)
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from lab.proc import LOOPBACK, LabError, free_ports

# A sink without TLS but with AUTH is deliberate (it shows a client refusing to AUTH in clear);
# aiosmtpd warns about it on every connection.
warnings.filterwarnings(
    "ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning
)


@dataclass(frozen=True)
class SinkMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    #: The session was under TLS (STARTTLS or implicit) when DATA came.
    tls: bool
    #: Login the session authenticated as (None: no AUTH).
    auth_login: str | None


@dataclass(frozen=True)
class AuthAttempt:
    login: str
    success: bool
    over_tls: bool
    mechanism: str


@dataclass
class _Record:
    messages: list[SinkMessage] = field(default_factory=list)
    auth_attempts: list[AuthAttempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    def __init__(self, record: _Record, implicit_tls: bool) -> None:
        self.record = record
        self.implicit_tls = implicit_tls

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # auth_data is what _authenticate put in its AuthResult: the login that succeeded.
        login = session.auth_data if session.authenticated else None
        msg = SinkMessage(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
            content=bytes(envelope.original_content or envelope.content or b""),
            tls=self.implicit_tls or session.ssl is not None,
            auth_login=login if isinstance(login, str) else None,
        )
        with self.record.lock:
            self.record.messages.append(msg)
        return "250 2.0.0 OK: recorded by the lab sink"


class SmtpSink:
    """An SMTP server on 127.0.0.1 (a free port, or ``port``) recording messages.

    ``cert``/``key``: offer STARTTLS (or, with ``implicit_tls``, TLS from the first byte); without
    them no TLS is offered at all. ``users``: require AUTH (PLAIN/LOGIN, only after TLS when TLS
    is offered) and accept these logins; ``None`` accepts mail without AUTH.
    ``require_tls``: refuse everything but EHLO/STARTTLS/QUIT before TLS.
    """

    def __init__(
        self,
        cert: Path | None = None,
        key: Path | None = None,
        users: dict[str, str] | None = None,
        *,
        port: int | None = None,
        require_tls: bool = True,
        implicit_tls: bool = False,
    ) -> None:
        self.host = LOOPBACK
        self.port = port if port is not None else free_ports(1)[0]
        self.users = users
        self.record = _Record()
        self.implicit_tls = implicit_tls
        tls_context: ssl.SSLContext | None = None
        if cert is not None and key is not None:
            tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls_context.minimum_version = ssl.TLSVersion.TLSv1_2
            tls_context.load_cert_chain(str(cert), str(key))
        server_kwargs: dict[str, Any] = {
            "authenticator": self._authenticate if users is not None else None,
            "auth_required": users is not None,
            # With TLS available, AUTH only after it (as production servers should); without
            # TLS, let AUTH happen in clear so a test can show the client refuses to send it.
            # (Implicit TLS: aiosmtpd only counts STARTTLS as TLS here, but the whole session is
            # encrypted from the first byte, so no extra requirement is needed.)
            "auth_require_tls": tls_context is not None and not implicit_tls,
            "require_starttls": require_tls and tls_context is not None and not implicit_tls,
        }
        if implicit_tls:
            if tls_context is None:
                raise ValueError("implicit_tls needs cert and key")
            self.controller = Controller(
                _Handler(self.record, implicit_tls),
                hostname=self.host,
                port=self.port,
                ssl_context=tls_context,
                server_hostname="localhost",
                **server_kwargs,
            )
        else:
            self.controller = Controller(
                _Handler(self.record, implicit_tls),
                hostname=self.host,
                port=self.port,
                tls_context=tls_context,
                **server_kwargs,
            )
        self._started = False

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = False
        login = ""
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode(errors="replace")
            password = auth_data.password.decode(errors="replace")
            ok = self.users is not None and self.users.get(login) == password
        with self.record.lock:
            self.record.auth_attempts.append(
                AuthAttempt(login, ok, self.implicit_tls or session.ssl is not None, mechanism)
            )
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def messages(self) -> list[SinkMessage]:
        with self.record.lock:
            return list(self.record.messages)

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self.record.lock:
            return list(self.record.auth_attempts)

    def start(self) -> SmtpSink:
        self.controller.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):
                self.controller.stop()
            self._started = False

    def wait_for_message(self, token: bytes | str, timeout: float = 20.0) -> SinkMessage:
        needle = token.encode() if isinstance(token, str) else token
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if needle in m.content:
                    return m
            if time.monotonic() >= deadline:
                raise LabError(
                    f"sink {self.address}: no message containing {token!r} within "
                    f"{timeout}s (auth attempts: {self.auth_attempts})"
                )
            time.sleep(0.05)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
