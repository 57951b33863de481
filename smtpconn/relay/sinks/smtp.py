"""SMTP / LMTP forward sink: hand each message to another server (the help desk's own MTA, or an
LMTP delivery agent such as Dovecot's).

The stdlib client is used in a thread because aiosmtplib has no LMTP. STARTTLS is used when the
server offers it (verified against the system store plus ``--ca-file``). 4xx and connection
problems are retried; 5xx is permanent (held in the spool).

Bytes already waiting after the server's 220 to STARTTLS were not sent by the TLS peer (RFC 3207
§5: a middlebox injecting replies); the hand-over is abandoned and retried later, with an error
that says so (``StartTlsInjection``), like the client in ``smtpconn.smtp.session``.

A message that needs SMTPUTF8 (a UTF-8 address, or it came with SMTPUTF8: ``smtp.session.needs_smtputf8``)
goes with ``MAIL FROM:<…> SMTPUTF8`` to a server that offers it; a server that does not is a
permanent failure that says so (the message is held), never a delivery with the UTF-8 mangled.
"""

from __future__ import annotations

import asyncio
import smtplib
from typing import ClassVar

from smtpconn.errors import SmtpconnFailure
from smtpconn.profile.model import SinkKind, SinkSettings
from smtpconn.relay.sinks.base import SinkContext, SinkError, SinkItem
from smtpconn.smtp.session import NO_SMTPUTF8, needs_smtputf8

INJECTION = "possible STARTTLS injection by a middlebox"


class StartTlsInjection(SmtpconnFailure, smtplib.SMTPException):
    """Clear text followed the 220 to STARTTLS (an ``smtplib.SMTPException`` too, so smtplib's
    own handling sees what it always saw)."""


class _GuardedSMTP(smtplib.SMTP):
    """smtplib's client, refusing to go on when anything follows the 220 to STARTTLS.

    smtplib drops its read buffer when it wraps the socket, so such bytes are not read as
    replies inside TLS; but they are proof that someone on the path writes into the session,
    and the hand-over must not carry on as if nothing happened."""

    def docmd(self, cmd: str, args: str = "") -> tuple[int, bytes]:
        reply = super().docmd(cmd, args)
        if cmd.upper() == "STARTTLS" and reply[0] == 220:
            waiting = self._waiting()
            if waiting:
                self.close()
                raise StartTlsInjection(
                    f"{len(waiting)} bytes followed the 220 reply to STARTTLS before the TLS "
                    f"handshake: {INJECTION}; the session was abandoned"
                )
        return reply

    def _waiting(self) -> bytes:
        """What is buffered or already readable, without blocking: with the socket briefly
        non-blocking, ``peek`` returns the file's buffer, or one read of what the socket has."""
        if self.file is None or self.sock is None:
            return b""
        timeout = self.sock.gettimeout()
        self.sock.settimeout(0)
        try:
            waiting: bytes = self.file.peek(1)
            return waiting
        except OSError:
            return b""
        finally:
            self.sock.settimeout(timeout)


class _GuardedLMTP(_GuardedSMTP, smtplib.LMTP):
    pass


def _needs_utf8(item: SinkItem) -> bool:
    return needs_smtputf8(item.mail_from, [item.rcpt], declared=bool(item.meta.get("smtputf8")))


class SmtpSink:
    """Serves both ``smtp`` and ``lmtp``: the kind picks the protocol and the default port."""

    concurrency: ClassVar[int | None] = None
    dedupes: ClassVar[bool] = False  # the receiving side may see a repeat (SinkItem.id)

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        assert settings.host is not None
        self.kind = settings.kind
        self.host = settings.host
        self.port = settings.port or (24 if self.kind == SinkKind.LMTP else 25)
        self.timeout = context.timeout
        self.hostname = context.hostname
        self.ca_file = context.ca_file

    @staticmethod
    def problems(settings: SinkSettings, context: SinkContext) -> list[str]:
        return []  # the server is reached at hand-over time: down now may be up then

    async def deliver(self, item: SinkItem) -> None:
        await asyncio.to_thread(self._deliver, item)

    def _deliver(self, item: SinkItem) -> None:
        from smtpconn.net import make_client_tls_context

        client_class = _GuardedLMTP if self.kind == SinkKind.LMTP else _GuardedSMTP
        try:
            with client_class(
                self.host, self.port, local_hostname=self.hostname, timeout=self.timeout
            ) as client:
                client.ehlo_or_helo_if_needed()
                if client.has_extn("starttls"):
                    client.starttls(context=make_client_tls_context(self.ca_file))
                    client.ehlo()
                options = ["SMTPUTF8"] if _needs_utf8(item) else []
                if options and not client.has_extn("smtputf8"):
                    raise SinkError(
                        f"{self.kind} {self.host}:{self.port} {NO_SMTPUTF8}", permanent=True
                    )
                refused = client.sendmail(item.mail_from, [item.rcpt], item.message, options)
                if refused:
                    code, text = next(iter(refused.values()))
                    raise SinkError(f"{self.kind} refused: {code} {text!r}", permanent=code >= 500)
        except smtplib.SMTPResponseException as exc:
            raise SinkError(
                f"{self.kind} {self.host}:{self.port} answered {exc.smtp_code}",
                permanent=exc.smtp_code >= 500,
            ) from None
        except StartTlsInjection as exc:
            raise SinkError(f"{self.kind} {self.host}:{self.port}: {exc}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            raise SinkError(
                f"{self.kind} refused the recipient ({code})", permanent=code >= 500
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SinkError(f"{self.kind} {self.host}:{self.port} unreachable: {exc}") from None
