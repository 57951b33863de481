"""The headers the relay adds to every inbound message, and the ones it removes.

The tag header's name and grammar live in :mod:`smtpconn.message.tag` (send-test reads it too).

``authenticated`` means the message came over TLS from a client that logged in with the
inbound credentials of this profile (the customer's server); ``unauthenticated`` means anyone
could have sent it (ordinary auto-forwarding). Because the header is only trustworthy if nobody
else can set it, every ``X-Smtpconn-Tag`` already present in a message is removed, and so is every
``Authentication-Results`` header that claims our own authserv-id (RFC 8601 §5).

Headers are prepended to the raw bytes: the body and existing headers are never re-encoded, so
DKIM signatures made upstream stay verifiable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import format_datetime, localtime

from smtpconn.message.authserv import claims
from smtpconn.message.escaping import escape_controls, has_controls
from smtpconn.message.headers import strip_headers
from smtpconn.message.tag import TAG_HEADER

__all__ = [
    "TraceInfo",
    "prepend",
    "received_header",
    "return_path",
    "safe_address",
    "strip_untrusted",
]


@dataclass(frozen=True, slots=True)
class TraceInfo:
    helo: str
    client_ip: str
    hostname: str  # ours
    queue_id: str
    recipient: str
    tls_version: str | None
    tls_cipher: str | None
    authenticated: bool


def received_header(info: TraceInfo, when: float | None = None) -> str:
    """An RFC 5321 §4.4 trace line; ``with`` follows RFC 3848 (ESMTP[S][A])."""
    import datetime as dt

    protocol = "ESMTP" + ("S" if info.tls_version else "") + ("A" if info.authenticated else "")
    moment = (
        dt.datetime.fromtimestamp(when, tz=dt.UTC).astimezone() if when is not None else localtime()
    )
    tls = (
        f"\r\n\t(using {info.tls_version} with cipher {info.tls_cipher})"
        if info.tls_version
        else ""
    )
    helo = _clean(info.helo) or "unknown"
    return (
        f"Received: from {helo} ([{info.client_ip}]){tls}\r\n"
        f"\tby {info.hostname} (smtpconn) with {protocol} id {info.queue_id}\r\n"
        f"\tfor <{_clean(info.recipient)}>; {format_datetime(moment)}\r\n"
    )


def _clean(text: str) -> str:
    # Whatever a client says in HELO must not be able to fold or break our header.
    return re.sub(r"[^\x21-\x7e]", "", text)[:255]


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u00a0-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u00a0-\U0010ffff]|\\[\x20-\x7e])*"')
_DOMAIN = re.compile(r"[A-Za-z0-9.\-_\u00a0-\U0010ffff]+|\[[\x21-\x5a\x5e-\x7e]+\]")
_DOMAIN_SAFE = re.compile(r"[A-Za-z0-9.\-_:\[\]]")


def _domain_char(char: str) -> str:
    if _DOMAIN_SAFE.fullmatch(char) or (ord(char) >= 0xA0 and not has_controls(char)):
        return char
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def safe_address(address: str) -> str:
    """An envelope address as it may appear in a header we write (``Return-Path``,
    ``Delivered-To``): unchanged when it is a well-formed mailbox, otherwise with the local part
    as an escaped quoted-string and every unsafe character of the domain as ``\\xNN`` — never a
    line break, a control character or a ``>`` that ends the path early."""
    if not address:
        return ""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if (
        not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local))
        or escape_controls(local) != local
    ):
        inner = local[1:-1] if len(local) >= 2 and local[0] == local[-1] == '"' else local
        inner = escape_controls(inner).replace("\\", "\\\\").replace('"', '\\"')
        local = f'"{inner}"'
    if domain and (not _DOMAIN.fullmatch(domain) or escape_controls(domain) != domain):
        domain = "".join(_domain_char(char) for char in domain)
    return f"{local}@{domain}" if at else local


def return_path(mail_from: str) -> str:
    """``Return-Path: <…>``; the null sender stays ``<>`` (RFC 5321 §4.4)."""
    return f"Return-Path: <{safe_address(mail_from)}>"


def strip_untrusted(raw: bytes, authserv_id: str) -> bytes:
    """Remove every ``X-Smtpconn-Tag`` and every ``Authentication-Results`` claiming our id."""
    ours = authserv_id

    def drop(name: str, value: str) -> bool:
        lname = name.lower()
        if lname == TAG_HEADER.lower():
            return True
        if lname == "authentication-results":
            return claims(value, ours)
        return False

    return strip_headers(raw, drop)


def prepend(raw: bytes, *headers: str) -> bytes:
    """Put ``headers`` (complete "Name: value" strings, CRLF-terminated or not) on top."""
    block = b""
    for header in headers:
        text = header if header.endswith("\r\n") else header + "\r\n"
        block += text.encode("utf-8")
    return block + raw
