"""Webhook sink: an HTTP POST per message.

The request is ``multipart/form-data`` with two parts, ``metadata`` (JSON: id, mail_from, rcpt,
tag, mode, client_ip, …) and ``message`` (the raw RFC 5322 message, ``message/rfc822``). When
``relay.sink.secret`` is set, the header ``X-Smtpconn-Signature: t=<unix time>,v1=<hex>`` carries
HMAC-SHA256 over ``"<t>." + body`` with that secret, so the receiver can check origin and reject
replays (compare t with its clock). ``X-Smtpconn-Id`` carries the spool id for de-duplication.

2xx = delivered; 408, 429 and 5xx or no answer = retry later with back-off; any other 4xx =
permanent (held in the spool for an administrator).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from typing import ClassVar
from urllib.parse import urlsplit

from smtpconn.errors import UsageError
from smtpconn.message.escaping import escape_controls
from smtpconn.profile.model import SinkKind, SinkSettings
from smtpconn.profile.secrets import resolve_secret
from smtpconn.relay.sinks.base import SinkContext, SinkError, SinkItem

SIGNATURE_HEADER = "X-Smtpconn-Signature"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, body: bytes, header: str, *, tolerance: float = 300) -> bool:
    """The receiver's side (also what our tests use): signature valid and fresh."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with https:// (or http:// on a trusted network)"
    if not parts.hostname or any(c.isspace() for c in url):
        return "not a valid URL (no host name, or spaces in it)"
    return None


def encode_multipart(metadata: dict[str, object], message: bytes) -> tuple[bytes, str]:
    boundary = "smtpconn-" + secrets.token_hex(12)
    meta = json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="metadata"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode() + meta
    body += (
        f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="message"; filename="message.eml"\r\n'
        "Content-Type: message/rfc822\r\n\r\n"
    ).encode() + message
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class WebhookSink:
    kind = SinkKind.WEBHOOK
    concurrency: ClassVar[int | None] = None
    dedupes: ClassVar[bool] = False  # the receiving side may see a repeat (SinkItem.id)

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        assert settings.url is not None
        self.url = settings.url
        self.secret_ref = settings.secret
        self.base_dir = context.base_dir
        self.timeout = context.timeout
        self.ca_file = context.ca_file

    @staticmethod
    def problems(settings: SinkSettings, context: SinkContext) -> list[str]:
        problems: list[str] = []
        if settings.url and (problem := url_problem(settings.url)):
            problems.append(f"relay.sink.url {settings.url!r}: {problem}")
        if settings.secret is not None:
            try:
                resolve_secret(settings.secret, context.base_dir)
            except UsageError as exc:
                problems.append(f"relay.sink.secret: {exc.message}")
        return problems

    async def deliver(self, item: SinkItem) -> None:
        await asyncio.to_thread(self._deliver, item)

    def _deliver(self, item: SinkItem) -> None:
        from smtpconn.net import make_client_tls_context

        body, content_type = encode_multipart(item.metadata(), item.message)
        # JSON escapes every control character in the metadata; the one value in an HTTP header
        # is escaped here (a spool id comes from a file name, which may hold anything).
        headers = {"Content-Type": content_type, "X-Smtpconn-Id": escape_controls(item.id)}
        if self.secret_ref is not None:
            secret = resolve_secret(self.secret_ref, self.base_dir).encode("utf-8")
            headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        context = make_client_tls_context(self.ca_file) if self.url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as reply:
                reply.read(65536)
        except urllib.error.HTTPError as exc:
            permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
            raise SinkError(f"webhook answered HTTP {exc.code}", permanent=permanent) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SinkError(f"webhook unreachable: {reason}") from None
