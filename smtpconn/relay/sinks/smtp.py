"""SMTP / LMTP forward sink: hand each message to another server (the help desk's own MTA, or an
LMTP delivery agent such as Dovecot's).

The stdlib client is used in a thread because aiosmtplib has no LMTP. STARTTLS is used when the
server offers it (verified against the system store plus ``--ca-file``). 4xx and connection
problems are retried; 5xx is permanent (held in the spool).
"""

from __future__ import annotations

import asyncio
import smtplib

from smtpconn.relay.config import RelayConfig
from smtpconn.relay.sinks.base import SinkError, SinkItem


class SmtpSink:
    def __init__(self, config: RelayConfig) -> None:
        assert config.sink.host is not None
        self.kind = config.sink.kind
        self.host = config.sink.host
        self.port = config.sink.port or (24 if self.kind == "lmtp" else 25)
        self.timeout = config.sink_timeout
        self.hostname = config.hostname
        self.ca_file = config.settings.ca_file

    async def deliver(self, item: SinkItem) -> None:
        await asyncio.to_thread(self._deliver, item)

    def _deliver(self, item: SinkItem) -> None:
        from smtpconn.net import make_client_tls_context

        client_class = smtplib.LMTP if self.kind == "lmtp" else smtplib.SMTP
        try:
            with client_class(
                self.host, self.port, local_hostname=self.hostname, timeout=self.timeout
            ) as client:
                client.ehlo_or_helo_if_needed()
                if client.has_extn("starttls"):
                    client.starttls(context=make_client_tls_context(self.ca_file))
                    client.ehlo()
                refused = client.sendmail(item.mail_from, [item.rcpt], item.message)
                if refused:
                    code, text = next(iter(refused.values()))
                    raise SinkError(f"{self.kind} refused: {code} {text!r}", permanent=code >= 500)
        except smtplib.SMTPResponseException as exc:
            raise SinkError(
                f"{self.kind} {self.host}:{self.port} answered {exc.smtp_code}",
                permanent=exc.smtp_code >= 500,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            raise SinkError(
                f"{self.kind} refused the recipient ({code})", permanent=code >= 500
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SinkError(f"{self.kind} {self.host}:{self.port} unreachable: {exc}") from None
