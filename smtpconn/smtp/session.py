"""The one SMTP client used by ``verify``, ``send-test`` and the relay's outbound delivery.

It is written on asyncio streams rather than on top of a general-purpose client library because
the policy *is* the product (never a secret or a message in clear text): common clients upgrade to TLS only when STARTTLS happens to
be advertised and will send AUTH in clear text if offered. Here:

* AUTH, MAIL, RCPT and DATA are refused by the session itself on a connection that is not
  encrypted (``PolicyError``), whatever the caller does.
* ``security = starttls``: STARTTLS must be advertised and must succeed; a server that does not
  advertise it (or a middlebox that strips it) is a failure (``FailureKind.NO_STARTTLS``), never a
  fall-back to clear text. ``security = tls``: implicit TLS from the first byte (RFC 8314).
* Nothing may follow the server's 220 to STARTTLS before the handshake: bytes already buffered
  then (checked after the 220 and again after the handshake, before anything is read inside TLS)
  were not sent by the TLS peer, and would be taken for its replies to EHLO, AUTH, MAIL, DATA. The
  session is abandoned (``FailureKind.STARTTLS_INJECTION``: "possible STARTTLS injection by a
  middlebox"); a delivery that meets it is temporary, never "delivered".
* AUTH and mail need TLS 1.2 or newer (``FailureKind.TLS_TOO_OLD``). ``verify`` may negotiate an
  older version only to *report* it; the session still refuses to send anything over it.
* Certificates are verified by the given context (system store plus ``--ca-file``, see
  ``smtpconn.net.make_client_tls_context``) against the profile's host name, even when the
  connection goes to an address resolved by us. ``insecure`` contexts skip only that check.
* The banner gets at least ``BANNER_TIMEOUT`` seconds (postscreen greet pauses); every other reply
  gets ``timeout`` seconds.

Public API (stable; the relay imports it; delivery itself is in ``smtp.delivery``, the
stages, failure kinds and ``SmtpFailure`` in ``smtp.failures``):

``SmtpSession(host, port, *, security, tls_context, ehlo_name, timeout, address=None,
transcript=None)``
    One connection. ``await open()`` (connect, banner, and TLS for implicit TLS), ``await
    ehlo()``, ``await starttls()``, ``await authenticate(mechanism, username, secret)``,
    ``await mail(sender)``, ``await rcpt(recipient) -> Reply``, ``await data(message) -> Reply``,
    ``await envelope(sender, recipients) -> Envelope`` (RFC 2920: MAIL, RCPTs and DATA in one
    write, when ``pipelining``), ``await body(message) -> Reply`` (after its 354),
    ``await empty_body()``, ``await quit()``, ``close()``. ``stages`` (list of ``StageRecord``), ``transcript_lines``
    (AUTH redacted), ``tls`` (``TlsInfo`` once encrypted), ``extensions`` (last EHLO).
    Failures raise ``SmtpFailure`` (stage, kind, reply, message, permanent).

``await establish(session, security)``
    open + EHLO + (STARTTLS + EHLO) per the policy.

``await login(session, server, secret)``
    AUTH with the mechanism ``server.auth`` names (the best one offered for ``auto``).

``ServerSpec(host, port, security, auth, username)``
    What the wire needs to know of a server to reach it and log in (no secret: that is given
    separately, already resolved).

``secure_client_context(ca_file, insecure=False)``
    ``make_client_tls_context`` with TLS 1.2 as the minimum, for callers that send mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpconn.smtp import sasl
from smtpconn.smtp.failures import (
    FailureKind,
    PolicyError,
    SmtpFailure,
    StageName,
    StageRecord,
    classify_certificate_error,
)
from smtpconn.smtp.replies import (
    Extensions,
    Reply,
    ReplyParseError,
    parse_ehlo,
    parse_reply_line,
)
from smtpconn.smtp.vocab import AuthMechanism, Security

BANNER_TIMEOUT = (
    30.0  # postscreen's default greet pause is 6 s, but sites raise it; RFC 5321 says 5 min
)
MAX_REPLY_LINES = 1000
# Commands per pipelined write: what either side buffers before the other reads stays bounded
# (a transaction of a thousand recipients must not fill both socket buffers and stall).
PIPELINE_BATCH = 100
MAX_LINE = 4096
TLS_MIN_FOR_SECRETS = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str  # "TLSv1.3"
    cipher: str
    verified: bool  # False when the context skipped certificate checks (--insecure)
    peer_cert_der: bytes | None
    # What the server sent, leaf first, unverified: tells a missing intermediate from a bad CA.
    peer_chain_der: tuple[bytes, ...] = ()

    @property
    def version_ok(self) -> bool:
        return self.version in ("TLSv1.2", "TLSv1.3")

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "cipher": self.cipher, "verified": self.verified}


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server to send through: where it is, how the connection is secured, how to log in."""

    host: str  # also the name its certificate must carry
    port: int
    security: Security
    auth: AuthMechanism
    username: str


def secure_client_context(ca_file: Path | None, *, insecure: bool = False) -> ssl.SSLContext:
    """A context fit for sending credentials and mail: TLS 1.2+, verified unless ``insecure``."""
    from smtpconn.net import make_client_tls_context

    context = make_client_tls_context(ca_file, insecure=insecure)
    context.minimum_version = TLS_MIN_FOR_SECRETS
    return context


Transcript = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The replies to a pipelined MAIL, RCPT… and DATA, in the order the commands went."""

    mail: Reply
    rcpts: tuple[Reply, ...]  # one per recipient, in the order given
    data: Reply


class SmtpSession:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls_context: ssl.SSLContext,
        ehlo_name: str,
        timeout: float,
        address: str | None = None,
        transcript: Transcript | None = None,
        banner_timeout: float | None = None,
    ) -> None:
        self.host = host  # the name certificates are checked against
        self.port = port
        self.address = address  # where to connect; the host name when None
        self.tls_context = tls_context
        self.ehlo_name = ehlo_name
        self.timeout = timeout
        self.banner_timeout = (
            max(BANNER_TIMEOUT, timeout) if banner_timeout is None else banner_timeout
        )
        self.stages: list[StageRecord] = []
        self.transcript_lines: list[str] = []
        self.tls: TlsInfo | None = None
        self.extensions: Extensions | None = None
        self.extensions_before_tls: Extensions | None = None
        self.banner: Reply | None = None
        self.peer_address: str | None = None
        self._transcript = transcript
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._broken = False  # no reply can be expected any more (timeout, TLS failure, EOF)

    # ----------------------------------------------------------------------------------------
    # Low level

    @property
    def target(self) -> str:
        if self.address and self.address != self.host:
            return f"{self.host} ({self.address}) port {self.port}"
        return f"{self.host} port {self.port}"

    def _log(self, line: str) -> None:
        self.transcript_lines.append(line)
        if self._transcript is not None:
            self._transcript(line)

    def _record(
        self, stage: StageName, ok: bool, started: float, reply: Reply | None = None, text: str = ""
    ) -> None:
        self.stages.append(
            StageRecord(
                stage.value,
                ok,
                time.monotonic() - started,
                reply.code if reply else None,
                reply.text if reply else text,
            )
        )

    async def _send(self, line: str, *, shown: str | None = None) -> None:
        assert self._writer is not None
        self._log("C: " + (line if shown is None else shown))
        self._writer.write(line.encode("utf-8") + b"\r\n")
        await self._writer.drain()

    async def _read_reply(self, stage: StageName, timeout: float | None = None) -> Reply:
        assert self._reader is not None
        wait = self.timeout if timeout is None else timeout
        lines: list[str] = []
        code: int | None = None
        try:
            async with asyncio.timeout(wait):
                while True:
                    raw = await self._reader.readline()
                    if not raw:
                        self._broken = True
                        raise SmtpFailure(
                            stage,
                            FailureKind.CLOSED,
                            f"{self.target} closed the connection"
                            + (f" after {lines[-1]!r}" if lines else " without a reply"),
                        )
                    text = raw[:MAX_LINE].decode("utf-8", errors="replace").rstrip("\r\n")
                    self._log("S: " + text)
                    line_code, last, body = parse_reply_line(text)
                    if code is not None and line_code != code:
                        raise ReplyParseError("multi-line reply mixes codes")
                    code = line_code
                    lines.append(body)
                    if last or len(lines) >= MAX_REPLY_LINES:
                        return Reply(code, tuple(lines))
        except TimeoutError:
            self._broken = True
            raise SmtpFailure(
                stage,
                FailureKind.TIMEOUT,
                f"{self.target} did not answer within {wait:g} s at the {stage.value} stage",
            ) from None
        except ReplyParseError as exc:
            self._broken = True
            raise SmtpFailure(
                stage, FailureKind.PROTOCOL, f"{self.target} does not speak SMTP: {exc}"
            ) from None
        except (ValueError, asyncio.LimitOverrunError):
            # A line past the stream's limit (64 KiB): no SMTP reply is that long, and the
            # rest of the line would be read as the next reply.
            self._broken = True
            raise SmtpFailure(
                stage,
                FailureKind.PROTOCOL,
                f"{self.target} does not speak SMTP: a reply line longer than 64 KiB",
            ) from None
        except (ConnectionError, OSError) as exc:
            raise self._broken_at(stage, exc) from None

    async def _command(self, stage: StageName, line: str, *, shown: str | None = None) -> Reply:
        started = time.monotonic()
        try:
            await self._send(line, shown=shown)
            reply = await self._read_reply(stage)
        except (ConnectionError, OSError) as exc:
            raise self._broken_at(stage, exc, started) from None
        except SmtpFailure as failure:
            self._record(stage, False, started, failure.reply, failure.message)
            raise
        self._record(stage, reply.positive, started, reply)
        return reply

    def _require_secure(self, what: str) -> None:
        if self.tls is None:
            raise PolicyError(f"refusing to send {what} over an unencrypted connection")
        if not self.tls.version_ok:
            raise PolicyError(f"refusing to send {what} over {self.tls.version}")

    def _capture_tls(self) -> TlsInfo:
        assert self._writer is not None
        ssl_object: ssl.SSLObject | None = self._writer.get_extra_info("ssl_object")
        assert ssl_object is not None
        cipher = ssl_object.cipher()
        verified = self.tls_context.verify_mode != ssl.CERT_NONE
        info = TlsInfo(
            version=ssl_object.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            verified=verified,
            peer_cert_der=ssl_object.getpeercert(binary_form=True),
            peer_chain_der=_unverified_chain(ssl_object),
        )
        self.tls = info
        self._log(
            f"-- TLS {info.version} {info.cipher}"
            + ("" if verified else " (certificate NOT checked: --insecure)")
        )
        return info

    def _tls_failure(self, stage: StageName, exc: BaseException) -> SmtpFailure:
        if isinstance(exc, ssl.SSLCertVerificationError):
            problem = classify_certificate_error(exc)
            reason = getattr(exc, "verify_message", "") or str(exc)
            return SmtpFailure(
                stage,
                FailureKind.CERTIFICATE,
                f"the certificate of {self.target} is not valid for {self.host}: {reason}",
                cert_problem=problem,
            )
        if isinstance(exc, TimeoutError):
            return SmtpFailure(
                stage, FailureKind.TIMEOUT, f"the TLS handshake with {self.target} timed out"
            )
        return SmtpFailure(
            stage,
            FailureKind.TLS_HANDSHAKE,
            f"the TLS handshake with {self.target} failed: {exc}",
        )

    # ----------------------------------------------------------------------------------------
    # Stages

    async def open(self, *, implicit_tls: bool = False) -> Reply:
        """Connect and read the banner; with ``implicit_tls`` the handshake comes first."""
        started = time.monotonic()
        where = self.address or self.host
        self._log(f"-- connecting to {self.target}" + (" (implicit TLS)" if implicit_tls else ""))
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    where,
                    self.port,
                    ssl=self.tls_context if implicit_tls else None,
                    server_hostname=self.host if implicit_tls else None,
                    # The whole open is bounded by our timeout; asyncio's own default is 60 s.
                    ssl_handshake_timeout=self.timeout if implicit_tls else None,
                )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            failure = self._tls_failure(StageName.TLS, exc)
            self._record(StageName.CONNECT, True, started, text="TCP connected")
            self._record(StageName.TLS, False, started, text=failure.message)
            raise failure from None
        except TimeoutError:
            failure = SmtpFailure(
                StageName.CONNECT,
                FailureKind.TIMEOUT,
                f"connecting to {self.target} timed out after {self.timeout:g} s "
                "(a firewall dropping the packets, or the wrong address)",
            )
            self._record(StageName.CONNECT, False, started, text=failure.message)
            raise failure from None
        except ConnectionRefusedError:
            failure = SmtpFailure(
                StageName.CONNECT,
                FailureKind.REFUSED,
                f"{self.target} refused the connection (nothing listens on that port)",
            )
            self._record(StageName.CONNECT, False, started, text=failure.message)
            raise failure from None
        except socket.gaierror as exc:
            failure = SmtpFailure(
                StageName.CONNECT, FailureKind.RESOLVE, f"{self.host} cannot be resolved: {exc}"
            )
            self._record(StageName.CONNECT, False, started, text=failure.message)
            raise failure from None
        except OSError as exc:
            failure = SmtpFailure(
                StageName.CONNECT,
                FailureKind.UNREACHABLE,
                f"cannot connect to {self.target}: {exc.strerror or exc}",
            )
            self._record(StageName.CONNECT, False, started, text=failure.message)
            raise failure from None
        peer = self._writer.get_extra_info("peername")
        self.peer_address = peer[0] if peer else where
        self._record(StageName.CONNECT, True, started, text=f"connected to {self.peer_address}")
        if implicit_tls:
            info = self._capture_tls()
            self._record(StageName.TLS, True, started, text=f"{info.version} {info.cipher}")
        started = time.monotonic()
        try:
            reply = await self._read_reply(StageName.BANNER, self.banner_timeout)
        except SmtpFailure as failure:
            self._record(StageName.BANNER, False, started, failure.reply, failure.message)
            raise
        self.banner = reply
        self._record(StageName.BANNER, reply.code == 220, started, reply)
        if reply.code != 220:
            raise SmtpFailure(
                StageName.BANNER,
                FailureKind.BANNER_REJECTED,
                _banner_explanation(reply, self.target),
                reply=reply,
                permanent=reply.permanent,
            )
        return reply

    async def ehlo(self) -> Extensions:
        reply = await self._command(StageName.EHLO, f"EHLO {self.ehlo_name}")
        if reply.code != 250:
            raise SmtpFailure(
                StageName.EHLO,
                FailureKind.REJECTED,
                f"{self.target} refused EHLO {self.ehlo_name}: {reply}",
                reply=reply,
            )
        self.extensions = parse_ehlo(reply)
        if self.tls is None:
            self.extensions_before_tls = self.extensions
        return self.extensions

    async def starttls(self) -> TlsInfo:
        """Upgrade; STARTTLS must have been advertised in the last EHLO."""
        if self.tls is not None:
            return self.tls
        if self.extensions is None or not self.extensions.has("STARTTLS"):
            started = time.monotonic()
            failure = SmtpFailure(
                StageName.STARTTLS,
                FailureKind.NO_STARTTLS,
                f"{self.target} does not offer STARTTLS, so the connection would stay in clear "
                "text; smtpconn never sends credentials or mail that way. Either the server has "
                "TLS switched off, or something on the path (a firewall's 'SMTP inspection', a "
                "middlebox) strips STARTTLS from its EHLO reply",
            )
            self._record(StageName.STARTTLS, False, started, text="STARTTLS not advertised")
            raise failure
        reply = await self._command(StageName.STARTTLS, "STARTTLS")
        if reply.code != 220:
            raise SmtpFailure(
                StageName.STARTTLS,
                FailureKind.STARTTLS_REJECTED,
                f"{self.target} advertised STARTTLS but refused it: {reply}",
                reply=reply,
            )
        started = time.monotonic()
        self._refuse_injected(started, "after its 220 reply to STARTTLS")
        assert self._writer is not None
        try:
            await self._writer.start_tls(
                self.tls_context, server_hostname=self.host, ssl_handshake_timeout=self.timeout
            )
        except (ssl.SSLError, ssl.CertificateError, TimeoutError, ConnectionError, OSError) as exc:
            self._broken = True
            failure = self._tls_failure(StageName.TLS, exc)
            self._record(StageName.TLS, False, started, text=failure.message)
            raise failure from None
        # Clear text that reached the reader just before the transport switched to TLS is
        # still in its buffer and would be the first "reply" read inside TLS.
        self._refuse_injected(started, "before the TLS handshake")
        info = self._capture_tls()
        self._record(StageName.TLS, True, started, text=f"{info.version} {info.cipher}")
        # RFC 3207 §4.2: forget everything learnt before TLS.
        self.extensions = None
        return info

    def _refuse_injected(self, started: float, when: str) -> None:
        """Abandon the session when clear-text bytes wait in the reader at the switch to TLS.

        The server says nothing between its 220 and the handshake, nor after the handshake
        before our EHLO; whatever is buffered came from someone on the path, unauthenticated,
        and would otherwise be read as the TLS peer's answers (RFC 3207 §5)."""
        waiting = _buffered(self._reader)
        if not waiting:
            return
        self._broken = True  # no QUIT either: the stream is out of step and not ours
        self._log(f"-- {len(waiting)} bytes waiting {when}: {waiting[:80]!r}")
        failure = SmtpFailure(
            StageName.STARTTLS,
            FailureKind.STARTTLS_INJECTION,
            f"{len(waiting)} bytes arrived from {self.target} {when} that were not sent inside "
            "TLS: possible STARTTLS injection by a middlebox (they would have been read as the "
            "server's first replies inside TLS); the session was abandoned and nothing was "
            "sent",
        )
        self._record(StageName.STARTTLS, False, started, text=failure.message)
        raise failure

    async def authenticate(self, mechanism: str, username: str, secret: str) -> Reply:
        """AUTH with ``mechanism`` (PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER); the secret is never
        logged."""
        self._require_secure("credentials")
        hidden = sasl.REDACTED
        started = time.monotonic()
        name = mechanism.upper()
        try:
            if name == "PLAIN":
                reply = await self._exchange(
                    f"AUTH PLAIN {sasl.plain_response(username, secret)}", f"AUTH PLAIN {hidden}"
                )
            elif name in sasl.TOKEN_MECHANISMS:
                reply = await self._bearer(name, username, secret)
            elif name == "LOGIN":
                reply = await self._exchange("AUTH LOGIN", "AUTH LOGIN")
                if reply.code == 334:
                    reply = await self._exchange(sasl.b64(username.encode()), hidden)
                if reply.code == 334:
                    reply = await self._exchange(sasl.b64(secret.encode()), hidden)
            else:
                raise PolicyError(f"unsupported mechanism {mechanism}")
        except SmtpFailure as failure:
            self._record(StageName.AUTH, False, started, failure.reply, failure.message)
            raise SmtpFailure(
                StageName.AUTH, failure.kind, failure.message, reply=failure.reply
            ) from None
        self._record(StageName.AUTH, reply.code == 235, started, reply)
        if reply.code != 235:
            raise SmtpFailure(
                StageName.AUTH,
                FailureKind.AUTH_FAILED,
                f"{self.target} refused AUTH {name} for {username}: {reply}",
                reply=reply,
            )
        return reply

    async def _bearer(self, name: str, username: str, token: str) -> Reply:
        """XOAUTH2 or OAUTHBEARER: the token in the initial response; a 334 is the server's JSON
        error, answered with the mechanism's empty response (XOAUTH2: an empty line; RFC 7628:
        a single ^A) so that the server ends the exchange with its final reply."""
        if name == "OAUTHBEARER":
            response = sasl.oauthbearer_response(username, token, self.host, self.port)
            finish = sasl.OAUTHBEARER_ABORT
        else:
            response, finish = sasl.xoauth2_response(username, token), ""
        reply = await self._exchange(f"AUTH {name} {response}", f"AUTH {name} {sasl.REDACTED}")
        if reply.code != 334:
            return reply
        detail = sasl.decode_challenge(reply.text)
        reply = await self._exchange(finish, finish)
        return reply if reply.code == 235 else Reply(reply.code, (*reply.lines, detail))

    async def _exchange(self, line: str, shown: str) -> Reply:
        await self._send(line, shown=shown)
        return await self._read_reply(StageName.AUTH)

    async def mail(self, sender: str, *, smtputf8: bool = False) -> Reply:
        """MAIL FROM; ``smtputf8`` when the transaction needs it (RFC 6531: UTF-8 in an address
        or in the header). A server that does not offer it gets nothing: a permanent failure
        that says why, never the message with its UTF-8 mangled or sent regardless."""
        self._require_secure("mail")
        reply = await self._command(StageName.MAIL, self._mail_command(sender, smtputf8))
        if reply.code != 250:
            raise self._sender_refused(sender, reply)
        return reply

    def _mail_command(self, sender: str, smtputf8: bool) -> str:
        needs = smtputf8 or not sender.isascii()
        if needs and not self._offers("SMTPUTF8"):
            self._record(StageName.MAIL, False, time.monotonic(), text=NO_SMTPUTF8)
            raise SmtpFailure(
                StageName.MAIL,
                FailureKind.REJECTED,
                f"{self.target} {NO_SMTPUTF8}",
                permanent=True,
            )
        return f"MAIL FROM:<{_path(sender)}>" + (" SMTPUTF8" if needs else "")

    def _sender_refused(self, sender: str, reply: Reply) -> SmtpFailure:
        return SmtpFailure(
            StageName.MAIL,
            FailureKind.REJECTED,
            f"{self.target} refused the sender {sender}: {reply}",
            reply=reply,
            permanent=reply.permanent,
        )

    @property
    def pipelining(self) -> bool:
        """The server offers PIPELINING (RFC 2920) in its last EHLO."""
        return self._offers("PIPELINING")

    async def envelope(
        self,
        sender: str,
        recipients: list[str],
        *,
        smtputf8: bool = False,
        read: list[Reply] | None = None,
    ) -> Envelope:
        """MAIL, every RCPT and DATA as one command group (RFC 2920; ``PIPELINE_BATCH``
        commands per write), then every reply read in order, each judged by the caller against
        its own command. A refused MAIL raises ``SmtpFailure`` (REJECTED) once all the group's
        replies are read, so the connection stays in step; so does a broken connection, at the
        stage whose reply was missing. ``read`` receives the replies as they come (MAIL's
        first), for a caller that must judge those read before a break. Only for a server that
        offers PIPELINING."""
        self._require_secure("mail")
        commands = [(StageName.MAIL, self._mail_command(sender, smtputf8))]
        commands += [(StageName.RCPT, f"RCPT TO:<{_path(r)}>") for r in recipients]
        commands.append((StageName.DATA, "DATA"))
        replies: list[Reply] = [] if read is None else read
        try:
            for start in range(0, len(commands), PIPELINE_BATCH):
                await self._exchange_group(commands[start : start + PIPELINE_BATCH], replies)
        except SmtpFailure:
            if replies and replies[0].code != 250:
                raise self._sender_refused(sender, replies[0]) from None
            raise
        if replies[0].code != 250:
            # A server that takes DATA after refusing MAIL now waits for a message that will
            # never come: the connection is out of step, not to be used again.
            self._broken = self._broken or replies[-1].code == 354
            raise self._sender_refused(sender, replies[0])
        return Envelope(replies[0], tuple(replies[1:-1]), replies[-1])

    async def _exchange_group(
        self, group: list[tuple[StageName, str]], replies: list[Reply]
    ) -> None:
        """One write for the group's commands, then its replies in order into ``replies``
        (MAIL and RCPT recorded as stages; DATA's stage ends with the final reply)."""
        assert self._writer is not None
        started = time.monotonic()
        stage = group[0][0]
        try:
            for _stage, line in group:
                self._log("C: " + line)
            self._writer.write(b"".join(line.encode("utf-8") + b"\r\n" for _s, line in group))
            await self._writer.drain()
            # `stage` follows the reply being awaited, so a break is reported (and judged for a
            # retry) at the command whose answer never came, not at the group's MAIL.
            for stage, _line in group:
                reply = await self._read_reply(stage)
                replies.append(reply)
                if stage is not StageName.DATA:
                    self._record(stage, reply.positive, started, reply)
        except (ConnectionError, OSError) as exc:
            raise self._broken_at(stage, exc, started) from None
        except SmtpFailure as failure:
            self._record(stage, False, started, failure.reply, failure.message)
            raise

    async def rcpt(self, recipient: str) -> Reply:
        """The reply, positive or not; only a broken connection raises."""
        self._require_secure("mail")
        return await self._command(StageName.RCPT, f"RCPT TO:<{_path(recipient)}>")

    async def data(self, message: bytes) -> Reply:
        self._require_secure("mail")
        # One "data" stage from the DATA command to the final reply, as people think of it.
        started = time.monotonic()
        try:
            await self._send("DATA")
            reply = await self._read_reply(StageName.DATA)
        except (ConnectionError, OSError) as exc:
            raise self._broken_at(StageName.DATA, exc, started) from None
        except SmtpFailure as failure:
            self._record(StageName.DATA, False, started, failure.reply, failure.message)
            raise
        if reply.code != 354:
            raise self.data_refused(reply, started)
        return await self.body(message, started)

    def data_refused(self, reply: Reply, started: float) -> SmtpFailure:
        """The failure (recorded) for a reply other than 354 to DATA."""
        self._record(StageName.DATA, False, started, reply)
        return SmtpFailure(
            StageName.DATA,
            FailureKind.REJECTED,
            f"{self.target} refused DATA: {reply}",
            reply=reply,
            permanent=reply.permanent,
        )

    def _broken_at(
        self, stage: StageName, exc: BaseException, started: float | None = None
    ) -> SmtpFailure:
        """The failure for a connection that broke at ``stage`` (recorded when ``started`` is
        given); the session is not used again."""
        self._broken = True
        if started is not None:
            self._record(stage, False, started, text=str(exc))
        return SmtpFailure(
            stage, FailureKind.CLOSED, f"the connection to {self.target} broke: {exc}"
        )

    async def body(self, message: bytes, started: float | None = None) -> Reply:
        """After the 354 to DATA: the message, dot-stuffed, in one write, and the final reply
        (anything but 250 raises ``SmtpFailure``). A reply already waiting before the message
        is sent was not an answer to it: the message is not sent, the connection is dropped."""
        self._require_secure("mail")
        started = time.monotonic() if started is None else started
        assert self._writer is not None
        early = _buffered(self._reader)
        if early:
            self._broken = True  # out of step: no QUIT either
            self._log(f"-- {len(early)} bytes waiting before the message: {early[:80]!r}")
            text = (
                f"{self.target} sent {len(early)} bytes before the message was sent (a reply "
                "to nothing we sent); the message was not sent and the connection was dropped"
            )
            self._record(StageName.DATA, False, started, text=text)
            raise SmtpFailure(StageName.DATA, FailureKind.PROTOCOL, text)
        try:
            self._log(f"C: <message, {len(message)} bytes>")
            self._writer.write(dot_stuff(message))
            await self._writer.drain()
            self._log("C: .")
            # RFC 5321 §4.5.3.2.6 allows 10 minutes for the final reply; we allow 3 timeouts.
            reply = await self._read_reply(StageName.DATA, self.timeout * 3)
        except (ConnectionError, OSError) as exc:
            raise self._broken_at(StageName.DATA, exc, started) from None
        except SmtpFailure as failure:
            self._record(StageName.DATA, False, started, failure.reply, failure.message)
            raise
        self._record(StageName.DATA, reply.code == 250, started, reply)
        if reply.code != 250:
            raise SmtpFailure(
                StageName.DATA,
                FailureKind.REJECTED,
                f"{self.target} refused the message: {reply}",
                reply=reply,
                permanent=reply.permanent,
            )
        return reply

    async def empty_body(self) -> None:
        """End a DATA the server accepted (354) although no recipient was: a lone dot, never
        the message (RFC 2920 §3.1); the transaction is then reset by the caller."""
        started = time.monotonic()
        assert self._writer is not None
        try:
            self._log("C: .")
            self._writer.write(b".\r\n")
            await self._writer.drain()
            reply = await self._read_reply(StageName.DATA, self.timeout * 3)
        except (ConnectionError, OSError) as exc:
            raise self._broken_at(StageName.DATA, exc, started) from None
        self._record(StageName.DATA, False, started, reply, "no recipient accepted")

    async def rset(self) -> Reply:
        """RSET between two transactions on one connection; anything but 250 is a failure."""
        reply = await self._command(StageName.RSET, "RSET")
        if reply.code != 250:
            raise SmtpFailure(
                StageName.RSET,
                FailureKind.PROTOCOL,
                f"{self.target} answered RSET with {reply}",
                reply=reply,
            )
        return reply

    @property
    def usable(self) -> bool:
        """The connection is open and in step (nothing arrived that we did not ask for):
        another command may be sent."""
        return (
            self._writer is not None
            and self._reader is not None
            and not self._broken
            and not self._reader.at_eof()
            and not self._writer.is_closing()
            and not _buffered(self._reader)
        )

    async def quit(self, *, wait: bool = True) -> None:
        """Polite QUIT; a server that hangs up first is not an error. ``wait=False`` sends it
        and closes without waiting a round trip for the 221 (nothing depends on it)."""
        if self._writer is None or self._broken:
            self.close()
            return
        with contextlib.suppress(SmtpFailure, ConnectionError, OSError):
            if wait:
                await self._command(StageName.QUIT, "QUIT")
            else:
                await self._send("QUIT")
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
            self._reader = None

    def _offers(self, keyword: str) -> bool:
        return self.extensions is not None and self.extensions.has(keyword)


def _buffered(reader: asyncio.StreamReader | None) -> bytes:
    """What the reader holds but nobody has read yet. StreamReader offers no public way to ask
    without waiting, so its buffer is looked at directly (present since Python 3.4)."""
    return bytes(getattr(reader, "_buffer", b""))


# 5.6.7: the enhanced status (RFC 6531 §3.7.1) a DSN for such a message carries.
NO_SMTPUTF8 = (
    "does not offer SMTPUTF8 (5.6.7), which this message needs (a UTF-8 address, or it was "
    "submitted with SMTPUTF8); it was not sent"
)


def needs_smtputf8(mail_from: str, rcpt_to: list[str], *, declared: bool = False) -> bool:
    """Whether a transaction needs SMTPUTF8 (RFC 6531 §3.4): a non-ASCII address, or the
    message came to us with SMTPUTF8 (``declared``). The content is not sniffed: raw UTF-8 in
    a header of an ASCII-addressed message (a help desk's unencoded ``Subject: Réponse``) goes
    as it always went, and a server without SMTPUTF8 takes it, where asking for SMTPUTF8 would
    bounce it."""
    return declared or not mail_from.isascii() or any(not r.isascii() for r in rcpt_to)


def _path(address: str) -> str:
    # Addresses are validated before they get here; this is the last line of defence against a
    # CR/LF turning one command into two.
    if any(c in address for c in "\r\n<>\0"):
        raise PolicyError("address contains a forbidden character")
    return address


def dot_stuff(message: bytes) -> bytes:
    """CRLF line ends, leading dots doubled (RFC 5321 §4.5.2), and the final ``.``."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text:
        return b".\r\n"
    if text.endswith(b"\n"):
        text = text[:-1]
    text = text.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
    if text.startswith(b"."):
        text = b"." + text
    return text + b"\r\n.\r\n"


def _banner_explanation(reply: Reply, target: str) -> str:
    if reply.code == 421:
        return (
            f"{target} is not accepting connections now (421 {reply.text}): usually too many "
            "connections from this address or the server shutting down; try again later"
        )
    if reply.code == 554:
        return (
            f"{target} refuses to talk to this address (554 {reply.text}): this client's IP "
            "is blocked or not allowed to connect; ask the server's administrator to allow it"
        )
    return f"{target} greeted with {reply} instead of 220"


def _unverified_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The certificates the peer sent, as DER (public API from Python 3.13, private before)."""
    public = getattr(ssl_object, "get_unverified_chain", None)
    if public is not None:
        return tuple(public() or ())
    private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if private is None:
        return ()
    return tuple(cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in private() or ())  # type: ignore[attr-defined]


async def establish(session: SmtpSession, security: Security) -> Extensions:
    """Connect and get to an encrypted, EHLO'd session, or raise ``SmtpFailure``."""
    if security is Security.TLS:
        await session.open(implicit_tls=True)
        return await session.ehlo()
    await session.open()
    await session.ehlo()
    await session.starttls()
    return await session.ehlo()


async def login(session: SmtpSession, server: ServerSpec, secret: str) -> Reply:
    """AUTH with the mechanism the server spec names (or the best one for ``auto``)."""
    offered = session.extensions.auth_mechanisms if session.extensions else frozenset()
    mechanism = sasl.choose_mechanism(server.auth, offered)
    advice = sasl.xoauth2_advice(server.auth, offered)
    if mechanism is None:
        started = time.monotonic()
        message = (
            f"{session.target} does not offer AUTH {sasl.wanted_text(server.auth)} after TLS "
            f"(offered: {', '.join(sorted(offered)) or 'no AUTH at all'})"
        )
        if advice is not None:
            message += "; " + advice
        session.stages.append(
            StageRecord(StageName.AUTH.value, False, time.monotonic() - started, text=message)
        )
        raise SmtpFailure(StageName.AUTH, FailureKind.AUTH_NOT_OFFERED, message)
    try:
        return await session.authenticate(mechanism, server.username, secret)
    except SmtpFailure as failure:
        if failure.kind is FailureKind.AUTH_FAILED and advice is not None:
            failure.message += "; " + advice
        raise
