"""The one SMTP client used by ``verify``, ``send-test`` and the relay's outbound delivery.

It is written on asyncio streams rather than on top of a general-purpose client library because
the policy *is* the product (issue 5): common clients upgrade to TLS only when STARTTLS happens to
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

Public API (stable; the relay imports it):

``SmtpSession(host, port, *, security, tls_context, ehlo_name, timeout, address=None,
transcript=None)``
    One connection. ``await open()`` (connect, banner, and TLS for implicit TLS), ``await
    ehlo()``, ``await starttls()``, ``await authenticate(mechanism, username, secret)``,
    ``await mail(sender)``, ``await rcpt(recipient) -> Reply``, ``await data(message) -> Reply``,
    ``await quit()``, ``close()``. ``stages`` (list of ``StageRecord``), ``transcript_lines``
    (AUTH redacted), ``tls`` (``TlsInfo`` once encrypted), ``extensions`` (last EHLO).
    Failures raise ``SmtpFailure`` (stage, kind, reply, message, permanent).

``await establish(session, security)``
    open + EHLO + (STARTTLS + EHLO) per the policy.

``await deliver(server, secret, mail_from, rcpt_to, message, *, tls_context, ehlo_name,
timeout, address=None, transcript=None) -> DeliveryResult``
    Deliver one message. ``DeliveryResult.recipients`` holds one ``RecipientOutcome`` per
    recipient (accepted, or failed permanently / temporarily with the reply); ``queue_id`` is read
    from the final 250. Classification: a 5xx reply to MAIL, RCPT or DATA is permanent; 4xx,
    timeouts, lost connections, and every failure before MAIL (connect, TLS, certificate, AUTH)
    are temporary, because they concern the connector's set-up rather than the message and a
    bounce would lose mail that a fixed set-up can deliver.

``DeliverySession(server, secret, *, tls_context, ehlo_name, timeout, address=None,
transcript=None)``
    Several messages over one connection: ``await send(mail_from, rcpt_to, message) ->
    DeliveryResult`` (classified like ``deliver``; TLS + AUTH on the first, ``RSET`` between,
    a fresh connection when the old one went stale), ``connected``, ``messages``, ``last_used``,
    ``await close()``.

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
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from smtpconn.profile.model import OutboundServer
from smtpconn.smtp import sasl
from smtpconn.smtp.replies import (
    Extensions,
    Reply,
    ReplyParseError,
    parse_ehlo,
    parse_queue_id,
    parse_reply_line,
)
from smtpconn.smtp.vocab import AuthMechanism, Security

BANNER_TIMEOUT = (
    30.0  # postscreen's default greet pause is 6 s, but sites raise it; RFC 5321 says 5 min
)
MAX_REPLY_LINES = 1000
MAX_LINE = 4096
TLS_MIN_FOR_SECRETS = ssl.TLSVersion.TLSv1_2


class StageName(StrEnum):
    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    TLS = "tls"  # the handshake itself (for implicit TLS, and after 220 to STARTTLS)
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    QUIT = "quit"
    RSET = "rset"  # between messages of a DeliverySession


class FailureKind(StrEnum):
    RESOLVE = "resolve"  # the host name has no address
    REFUSED = "refused"  # TCP RST: nothing listens there
    UNREACHABLE = "unreachable"  # no route, network down
    TIMEOUT = "timeout"  # no reply in time
    CLOSED = "closed"  # the server closed the connection
    BANNER_REJECTED = "banner-rejected"  # 421 / 554 greeting
    PROTOCOL = "protocol"  # the peer does not speak SMTP
    NO_STARTTLS = "no-starttls"  # STARTTLS required but not advertised
    STARTTLS_REJECTED = "starttls-rejected"  # advertised, but the command was refused
    # Bytes already waiting after the 220 to STARTTLS: a middlebox appending clear-text replies
    # that would be read as the server's first answers inside TLS (RFC 3207 §5, CVE-2011-0411).
    STARTTLS_INJECTION = "starttls-injection"
    TLS_HANDSHAKE = "tls-handshake"  # the handshake failed (not a certificate problem)
    CERTIFICATE = "certificate"  # the certificate did not verify (see CertProblem)
    TLS_TOO_OLD = "tls-too-old"  # below TLS 1.2: we will not send secrets or mail
    AUTH_NOT_OFFERED = "auth-not-offered"  # the configured mechanism is not offered
    AUTH_FAILED = "auth-failed"  # credentials refused
    REJECTED = "rejected"  # a MAIL/RCPT/DATA reply refused the message
    POLICY = "policy"  # the caller asked for something the policy forbids


class CertProblem(StrEnum):
    UNTRUSTED_ISSUER = "untrusted-issuer"
    SELF_SIGNED = "self-signed"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    HOSTNAME_MISMATCH = "hostname-mismatch"
    OTHER = "other"


# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) that name a reason a person can act on.
_CERT_CODES: dict[int, CertProblem] = {
    2: CertProblem.UNTRUSTED_ISSUER,  # unable to get issuer certificate
    9: CertProblem.NOT_YET_VALID,
    10: CertProblem.EXPIRED,
    18: CertProblem.SELF_SIGNED,  # depth zero self-signed
    19: CertProblem.SELF_SIGNED,  # self-signed certificate in chain (a private root)
    20: CertProblem.UNTRUSTED_ISSUER,  # unable to get local issuer certificate
    21: CertProblem.UNTRUSTED_ISSUER,  # unable to verify the first certificate
    62: CertProblem.HOSTNAME_MISMATCH,
}


def classify_certificate_error(error: ssl.SSLCertVerificationError) -> CertProblem:
    problem = _CERT_CODES.get(getattr(error, "verify_code", 0) or 0)
    if problem is not None:
        return problem
    message = str(getattr(error, "verify_message", "") or error).lower()
    if "hostname mismatch" in message or "ip address mismatch" in message:
        return CertProblem.HOSTNAME_MISMATCH
    return CertProblem.OTHER


class PolicyError(Exception):
    """The caller asked the session to do something the policy forbids (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class StageRecord:
    stage: str
    ok: bool
    seconds: float
    code: int | None = None
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "ok": self.ok,
            "code": self.code,
            "reply": self.text,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str  # "TLSv1.3"
    cipher: str
    verified: bool  # False when the context skipped certificate checks (--insecure)
    peer_cert_der: bytes | None
    peer_cert: dict[str, Any] | None  # ssl's decoded form; only available when verified

    @property
    def version_ok(self) -> bool:
        return self.version in ("TLSv1.2", "TLSv1.3")

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "cipher": self.cipher, "verified": self.verified}


class SmtpFailure(Exception):
    """A stage failed. ``kind`` says how; ``reply`` is the server's answer when there was one."""

    def __init__(
        self,
        stage: StageName,
        kind: FailureKind,
        message: str,
        *,
        reply: Reply | None = None,
        cert_problem: CertProblem | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.kind = kind
        self.message = message
        self.reply = reply
        self.cert_problem = cert_problem
        self.permanent = permanent

    @property
    def could_not_connect(self) -> bool:
        """True when we never spoke SMTP with the server (exit 3 territory)."""
        return self.stage in (StageName.CONNECT, StageName.BANNER) and self.kind in (
            FailureKind.RESOLVE,
            FailureKind.REFUSED,
            FailureKind.UNREACHABLE,
            FailureKind.TIMEOUT,
            FailureKind.CLOSED,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage.value,
            "kind": self.kind.value,
            "message": self.message,
            "code": self.reply.code if self.reply else None,
            "reply": self.reply.text if self.reply else None,
            "certificate_problem": self.cert_problem.value if self.cert_problem else None,
            "permanent": self.permanent,
        }


def secure_client_context(ca_file: Path | None, *, insecure: bool = False) -> ssl.SSLContext:
    """A context fit for sending credentials and mail: TLS 1.2+, verified unless ``insecure``."""
    from smtpconn.net import make_client_tls_context

    context = make_client_tls_context(ca_file, insecure=insecure)
    context.minimum_version = TLS_MIN_FOR_SECRETS
    return context


Transcript = Callable[[str], None]


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
    def encrypted(self) -> bool:
        return self.tls is not None

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
        except (ConnectionError, OSError) as exc:
            self._broken = True
            raise SmtpFailure(
                stage, FailureKind.CLOSED, f"the connection to {self.target} broke: {exc}"
            ) from None

    async def _command(self, stage: StageName, line: str, *, shown: str | None = None) -> Reply:
        started = time.monotonic()
        try:
            await self._send(line, shown=shown)
            reply = await self._read_reply(stage)
        except (ConnectionError, OSError) as exc:
            self._record(stage, False, started, text=str(exc))
            raise SmtpFailure(
                stage, FailureKind.CLOSED, f"the connection to {self.target} broke: {exc}"
            ) from None
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
            peer_cert=ssl_object.getpeercert() if verified else None,
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
        """AUTH with ``mechanism`` (PLAIN, LOGIN or XOAUTH2); the secret is never logged."""
        self._require_secure("credentials")
        hidden = sasl.REDACTED
        started = time.monotonic()
        name = mechanism.upper()
        try:
            if name == "PLAIN":
                reply = await self._exchange(
                    f"AUTH PLAIN {sasl.plain_response(username, secret)}", f"AUTH PLAIN {hidden}"
                )
            elif name == "XOAUTH2":
                reply = await self._exchange(
                    f"AUTH XOAUTH2 {sasl.xoauth2_response(username, secret)}",
                    f"AUTH XOAUTH2 {hidden}",
                )
                if reply.code == 334:
                    # The server's JSON error; RFC 7628 says answer with an empty line to finish.
                    detail = sasl.decode_challenge(reply.text)
                    reply = await self._exchange("", "")
                    if reply.code != 235:
                        reply = Reply(reply.code, (*reply.lines, detail))
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

    async def _exchange(self, line: str, shown: str) -> Reply:
        await self._send(line, shown=shown)
        return await self._read_reply(StageName.AUTH)

    async def mail(self, sender: str) -> Reply:
        self._require_secure("mail")
        params = " SMTPUTF8" if not sender.isascii() and self._offers("SMTPUTF8") else ""
        reply = await self._command(StageName.MAIL, f"MAIL FROM:<{_path(sender)}>{params}")
        if reply.code != 250:
            raise SmtpFailure(
                StageName.MAIL,
                FailureKind.REJECTED,
                f"{self.target} refused the sender {sender}: {reply}",
                reply=reply,
                permanent=reply.permanent,
            )
        return reply

    async def rcpt(self, recipient: str) -> Reply:
        """The reply, positive or not; only a broken connection raises."""
        self._require_secure("mail")
        return await self._command(StageName.RCPT, f"RCPT TO:<{_path(recipient)}>")

    async def data(self, message: bytes) -> Reply:
        self._require_secure("mail")
        # One "data" stage from the DATA command to the final reply, as people think of it.
        started = time.monotonic()
        assert self._writer is not None
        try:
            await self._send("DATA")
            reply = await self._read_reply(StageName.DATA)
            if reply.code != 354:
                self._record(StageName.DATA, False, started, reply)
                raise SmtpFailure(
                    StageName.DATA,
                    FailureKind.REJECTED,
                    f"{self.target} refused DATA: {reply}",
                    reply=reply,
                    permanent=reply.permanent,
                )
            self._log(f"C: <message, {len(message)} bytes>")
            self._writer.write(dot_stuff(message))
            await self._writer.drain()
            self._log("C: .")
            # RFC 5321 §4.5.3.2.6 allows 10 minutes for the final reply; we allow 3 timeouts.
            reply = await self._read_reply(StageName.DATA, self.timeout * 3)
        except (ConnectionError, OSError) as exc:
            self._broken = True
            self._record(StageName.DATA, False, started, text=str(exc))
            raise SmtpFailure(
                StageName.DATA, FailureKind.CLOSED, f"the connection to {self.target} broke: {exc}"
            ) from None
        except SmtpFailure as failure:
            if failure.kind is not FailureKind.REJECTED:
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
        """The connection is open and in step: another command may be sent."""
        return (
            self._writer is not None
            and self._reader is not None
            and not self._broken
            and not self._reader.at_eof()
            and not self._writer.is_closing()
        )

    async def quit(self) -> None:
        """Polite QUIT; a server that hangs up first is not an error."""
        if self._writer is None or self._broken:
            self.close()
            return
        with contextlib.suppress(SmtpFailure, ConnectionError, OSError):
            await self._command(StageName.QUIT, "QUIT")
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


def _path(address: str) -> str:
    # Addresses are validated before they get here; this is the last line of defence against a
    # CR/LF turning one command into two.
    if any(c in address for c in "\r\n<>\0"):
        raise PolicyError("address contains a forbidden character")
    return address


def dot_stuff(message: bytes) -> bytes:
    """CRLF line ends, leading dots doubled (RFC 5321 §4.5.2), and the final ``.``."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body + b".\r\n"


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


async def establish(session: SmtpSession, security: Security) -> Extensions:
    """Connect and get to an encrypted, EHLO'd session, or raise ``SmtpFailure``."""
    if security is Security.TLS:
        await session.open(implicit_tls=True)
        return await session.ehlo()
    await session.open()
    await session.ehlo()
    await session.starttls()
    return await session.ehlo()


async def login(session: SmtpSession, server: OutboundServer, secret: str) -> Reply:
    """AUTH with the mechanism the profile configures (or the best one for ``auto``)."""
    offered = session.extensions.auth_mechanisms if session.extensions else frozenset()
    mechanism = sasl.choose_mechanism(server.auth, offered)
    if mechanism is None:
        started = time.monotonic()
        wanted = (
            "PLAIN or LOGIN" if server.auth is AuthMechanism.AUTO else server.auth.value.upper()
        )
        message = (
            f"{session.target} does not offer AUTH {wanted} after TLS "
            f"(offered: {', '.join(sorted(offered)) or 'no AUTH at all'})"
        )
        if "XOAUTH2" in offered and server.auth is not AuthMechanism.XOAUTH2:
            message += '; it offers XOAUTH2: set auth = "xoauth2" with an OAuth token reference'
        session.stages.append(
            StageRecord(StageName.AUTH.value, False, time.monotonic() - started, text=message)
        )
        raise SmtpFailure(StageName.AUTH, FailureKind.AUTH_NOT_OFFERED, message)
    try:
        return await session.authenticate(mechanism, server.username, secret)
    except SmtpFailure as failure:
        if (
            failure.kind is FailureKind.AUTH_FAILED
            and "XOAUTH2" in offered
            and mechanism != "XOAUTH2"
        ):
            failure.message += (
                "; the server also offers XOAUTH2 — Microsoft 365 and Google Workspace are "
                'switching basic AUTH off: set auth = "xoauth2" and secret to an OAuth token '
                "reference"
            )
        raise


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    recipient: str
    accepted: bool  # the server took responsibility for this recipient
    permanent: bool  # for a failure: bounce (True) or retry later (False)
    code: int | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "accepted": self.accepted,
            "permanent": self.permanent,
            "code": self.code,
            "reply": self.text,
        }


@dataclass
class DeliveryResult:
    recipients: list[RecipientOutcome]
    stages: list[StageRecord]
    transcript: list[str]
    queue_id: str | None = None
    failure: SmtpFailure | None = None
    tls: TlsInfo | None = None
    peer_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delivered(self) -> bool:
        return bool(self.recipients) and all(r.accepted for r in self.recipients)

    @property
    def accepted(self) -> list[str]:
        return [r.recipient for r in self.recipients if r.accepted]

    @property
    def permanent_failures(self) -> list[RecipientOutcome]:
        return [r for r in self.recipients if not r.accepted and r.permanent]

    @property
    def temporary_failures(self) -> list[RecipientOutcome]:
        return [r for r in self.recipients if not r.accepted and not r.permanent]


async def deliver(
    server: OutboundServer,
    secret: str,
    mail_from: str,
    rcpt_to: list[str],
    message: bytes,
    *,
    tls_context: ssl.SSLContext,
    ehlo_name: str,
    timeout: float,
    address: str | None = None,
    transcript: Transcript | None = None,
) -> DeliveryResult:
    """Deliver one message through ``server`` with TLS + AUTH. Never raises ``SmtpFailure``:
    the outcome of every recipient is in the result."""
    session = SmtpSession(
        server.host,
        server.port,
        tls_context=tls_context,
        ehlo_name=ehlo_name,
        timeout=timeout,
        address=address,
        transcript=transcript,
    )
    result = DeliveryResult([], session.stages, session.transcript_lines)
    try:
        await _secure_login(session, server, secret, result)
        await _transaction(session, mail_from, rcpt_to, message, result)
        await session.quit()
    except SmtpFailure as failure:
        _fail_undecided(result, rcpt_to, failure)
        await session.quit()
    finally:
        session.close()
        result.peer_address = session.peer_address
    return result


async def _secure_login(
    session: SmtpSession, server: OutboundServer, secret: str, result: DeliveryResult
) -> None:
    """Connect, encrypt and authenticate per the policy, or raise ``SmtpFailure``."""
    await establish(session, server.security)
    result.tls = session.tls
    if session.tls is not None and not session.tls.version_ok:
        raise SmtpFailure(
            StageName.TLS,
            FailureKind.TLS_TOO_OLD,
            f"{session.target} negotiated {session.tls.version}; smtpconn needs TLS 1.2+",
        )
    await login(session, server, secret)


async def _transaction(
    session: SmtpSession,
    mail_from: str,
    rcpt_to: list[str],
    message: bytes,
    result: DeliveryResult,
) -> None:
    """MAIL, RCPT for each recipient, DATA when any was accepted; outcomes go to ``result``."""
    pending: list[str] = []
    await session.mail(mail_from)
    for recipient in rcpt_to:
        reply = await session.rcpt(recipient)
        if reply.code in (250, 251):
            pending.append(recipient)
        else:
            result.recipients.append(
                RecipientOutcome(recipient, False, reply.permanent, reply.code, reply.text)
            )
    if pending:
        reply = await session.data(message)
        result.queue_id = parse_queue_id(reply)
        result.recipients.extend(
            RecipientOutcome(r, True, False, reply.code, reply.text) for r in pending
        )


def _fail_undecided(result: DeliveryResult, rcpt_to: list[str], failure: SmtpFailure) -> None:
    """Every recipient without an outcome yet fails with ``failure``: permanently only for a
    5xx to MAIL or DATA (see ``deliver``)."""
    result.failure = failure
    decided = {r.recipient for r in result.recipients}
    permanent = failure.permanent and failure.stage in (StageName.MAIL, StageName.DATA)
    for recipient in rcpt_to:
        if recipient not in decided:
            result.recipients.append(
                RecipientOutcome(
                    recipient,
                    False,
                    permanent,
                    failure.reply.code if failure.reply else None,
                    failure.message,
                )
            )


class DeliverySession:
    """Several messages to one server over one connection: TLS and AUTH once, ``RSET`` between
    messages (what MTAs' connection caches do; a new TLS + AUTH session per message was most of
    the relay's outbound cost).

    The policy is the one of :func:`deliver`, which this mirrors message by message: the
    connection is encrypted and authenticated before any MAIL, and each :meth:`send` returns a
    ``DeliveryResult`` classified exactly like ``deliver``'s (it never raises ``SmtpFailure``).
    The connection is opened by the first :meth:`send`; when a later send finds it closed, or
    its ``RSET`` fails (the server dropped an idle connection), a fresh one is opened for that
    message, so a stale connection never costs a message a retry. After a failure that broke the
    connection the next send reconnects; a refused message (5xx/4xx reply) leaves it usable.
    ``close()`` says QUIT. Not safe for concurrent sends: one message at a time.
    """

    def __init__(
        self,
        server: OutboundServer,
        secret: str,
        *,
        tls_context: ssl.SSLContext,
        ehlo_name: str,
        timeout: float,
        address: str | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        self.server = server
        self._secret = secret
        self._tls_context = tls_context
        self._ehlo_name = ehlo_name
        self._timeout = timeout
        self.address = address
        self._transcript = transcript
        self._session: SmtpSession | None = None
        self.messages = 0  # transactions on the current connection
        self.last_used = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.usable

    def _new_session(self) -> SmtpSession:
        return SmtpSession(
            self.server.host,
            self.server.port,
            tls_context=self._tls_context,
            ehlo_name=self._ehlo_name,
            timeout=self._timeout,
            address=self.address,
            transcript=self._transcript,
        )

    async def _drop(self) -> None:
        if self._session is not None:
            await self._session.quit()
            self._session = None
        self.messages = 0

    async def send(self, mail_from: str, rcpt_to: list[str], message: bytes) -> DeliveryResult:
        self.last_used = time.monotonic()
        if self._session is not None:
            try:
                if not self._session.usable:
                    raise SmtpFailure(StageName.RSET, FailureKind.CLOSED, "connection closed")
                await self._session.rset()
            except SmtpFailure:
                await self._drop()  # stale: nothing of this message was sent on it
        result = DeliveryResult([], [], [])
        session = self._session or self._new_session()
        try:
            if self._session is None:
                # Only a connection that got through TLS *and* AUTH is kept for the next
                # message: MAIL on a half-set-up one would be refused and bounce the mail.
                await _secure_login(session, self.server, self._secret, result)
                self._session = session
            result.tls = session.tls
            self.messages += 1
            await _transaction(session, mail_from, rcpt_to, message, result)
        except SmtpFailure as failure:
            _fail_undecided(result, rcpt_to, failure)
        except BaseException:
            session.close()
            self._session = None
            self.messages = 0
            raise
        finally:
            result.stages = list(session.stages)
            result.transcript = list(session.transcript_lines)
            result.peer_address = session.peer_address
            # This message's records only; a long-lived connection must not grow them.
            session.stages.clear()
            session.transcript_lines.clear()
            self.last_used = time.monotonic()
        if self._session is None:
            await session.quit()  # set-up failed: say goodbye, keep nothing
        elif not session.usable:
            await self._drop()
        return result

    async def close(self) -> None:
        """QUIT (politely; a server that already hung up is fine)."""
        await self._drop()
