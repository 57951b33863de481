"""The headers the relay adds to every inbound message, and the ones it removes.

Tag header (help-desk triggers match on it; the grammar is stable)::

    X-Smtpconn-Tag: authenticated; mode=bidirectional
    X-Smtpconn-Tag: unauthenticated; mode=outbound-only
    X-Smtpconn-Tag: authenticated; mode=bidirectional; origin=relay-dsn   (a bounce we generated)

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
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime, localtime

TAG_HEADER = "X-Smtpconn-Tag"
AUTHENTICATED = "authenticated"
UNAUTHENTICATED = "unauthenticated"


def tag_value(authenticated: bool, mode: str, origin: str | None = None) -> str:
    value = f"{AUTHENTICATED if authenticated else UNAUTHENTICATED}; mode={mode}"
    if origin:
        value += f"; origin={origin}"
    return value


def parse_tag(value: str) -> dict[str, str]:
    """``authenticated; mode=bidirectional`` -> {"tag": "authenticated", "mode": …}."""
    parts = [p.strip() for p in value.split(";") if p.strip()]
    result = {"tag": parts[0] if parts else ""}
    for part in parts[1:]:
        key, _, val = part.partition("=")
        result[key.strip().lower()] = val.strip()
    return result


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


def split_header_block(raw: bytes) -> tuple[list[bytes], bytes]:
    """(header fields each with its folded continuation lines, the rest from the blank line)."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        line = raw[pos:] if end < 0 else raw[pos : end + 1]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif b":" in line:
            fields.append(line)
        else:
            break  # not a header: the body starts here (a message without a blank line)
        pos += len(line)
    return fields, raw[pos:]


def strip_headers(raw: bytes, drop: Callable[[str, str], bool]) -> bytes:
    """Remove the header fields for which ``drop(name, value)`` is true."""
    fields, rest = split_header_block(raw)
    kept = []
    for field in fields:
        name, _, value = field.decode("latin-1").partition(":")
        if not drop(name.strip(), " ".join(value.split())):
            kept.append(field)
    return b"".join(kept) + rest


def strip_untrusted(raw: bytes, authserv_id: str) -> bytes:
    ours = authserv_id.lower()

    def drop(name: str, value: str) -> bool:
        lname = name.lower()
        if lname == TAG_HEADER.lower():
            return True
        if lname == "authentication-results":
            return value.split(";", 1)[0].strip().lower() == ours
        return False

    return strip_headers(raw, drop)


def prepend(raw: bytes, *headers: str) -> bytes:
    """Put ``headers`` (complete "Name: value" strings, CRLF-terminated or not) on top."""
    block = b""
    for header in headers:
        text = header if header.endswith("\r\n") else header + "\r\n"
        block += text.encode("utf-8")
    return block + raw


def header_value(raw: bytes, name: str) -> str | None:
    fields, _ = split_header_block(raw)
    for field in fields:
        fname, _, value = field.decode("utf-8", "replace").partition(":")
        if fname.strip().lower() == name.lower():
            return " ".join(value.split())
    return None
