"""Delivery status notifications (RFC 3464) for replies that could not be delivered.

The bounce goes to the reply's envelope sender — a support address — and is handed to the help
desk through the sink like any inbound message, so a failed reply is always seen by a person.
"""

from __future__ import annotations

import quopri
import re
import secrets
import time
from dataclasses import dataclass
from email.utils import formatdate, make_msgid

from smtpconn.message.escaping import escape_controls
from smtpconn.message.headers import split_header_block
from smtpconn.relay.tagging import safe_address


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    recipient: str
    status: str  # enhanced status code, e.g. 5.1.1
    diagnostic: str  # the remote server's reply, or our reason


def build_dsn(
    *,
    reporting_mta: str,
    sender: str,
    original: bytes,
    arrival: float,
    failures: list[FailedRecipient],
) -> bytes:
    """A ``multipart/report; report-type=delivery-status`` message, CRLF line endings."""
    boundary = f"smtpconn-dsn-{secrets.token_hex(10)}"
    explanation = "\r\n".join(
        [
            f"This is the smtpconn relay at {reporting_mta}.",
            "",
            "Your message could not be delivered to the following recipient(s):",
            "",
            *(f"  <{safe_address(f.recipient)}>: {_one_line(f.diagnostic)}" for f in failures),
        ]
    )
    explanation_part = _text_part(explanation)
    status = (
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"Arrival-Date: {formatdate(arrival or time.time(), localtime=True)}\r\n"
    )
    for f in failures:
        status += (
            "\r\n"
            f"Final-Recipient: {_address_field(f.recipient)}\r\n"
            "Action: failed\r\n"
            f"Status: {f.status}\r\n"
            f"Diagnostic-Code: smtp; {_one_line(f.diagnostic)}\r\n"
        )
    fields, _ = split_header_block(original)
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{safe_address(sender)}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {formatdate(localtime=True)}\r\n"
        f"Message-ID: {make_msgid(domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
    )
    body = (
        f"--{boundary}\r\n{explanation_part}\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status}"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    # Every line end (CR, LF or CRLF) becomes CRLF: the quoted header block cannot smuggle a
    # bare CR that one reader takes for a line end and another does not.
    headers = re.sub(rb"\r\n|\r|\n", b"\r\n", b"".join(fields))
    return (
        head.encode("ascii", "replace")
        + body.encode("ascii", "replace")
        + headers
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _address_field(address: str) -> str:
    """``Final-Recipient``'s value: ``rfc822`` for an ASCII address, RFC 6533's ``utf-8`` type
    with its 7-bit form for an internationalised one (ASCII with "?" in place of every
    non-ASCII character would name somebody else's mailbox)."""
    safe = safe_address(address)
    if safe.isascii():
        return f"rfc822; {safe}"
    return f"utf-8; {_utf8_addr_xtext(safe)}"


def _text_part(text: str) -> str:
    """The human-readable part: US-ASCII as it is; otherwise UTF-8 in quoted-printable, so a
    person reads the mailbox (``jörg@…``) as written while the DSN stays 7-bit for every sink."""
    if text.isascii():
        return f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
    # Line by line: quopri breaks a long line with "=\n"; the DSN's lines end in CRLF only.
    encoded = "\r\n".join(
        quopri.encodestring(line.encode("utf-8")).decode("ascii").replace("=\n", "=\r\n")
        for line in text.split("\r\n")
    )
    return (
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{encoded}"
    )


# RFC 6533 section 3: utf-8-addr-xtext keeps QCHAR (printable ASCII except "+", "=" and "\")
# and writes every other character as ``\x{HEXPOINT}`` (upper-case hex, no leading zeros
# beyond two digits).
_XTEXT_SPECIAL = frozenset("+=\\")


def _utf8_addr_xtext(address: str) -> str:
    return "".join(
        char if "!" <= char <= "~" and char not in _XTEXT_SPECIAL else f"\\x{{{ord(char):02X}}}"
        for char in address
    )


def _one_line(text: str) -> str:
    # The diagnostic is a remote server's text (or ours): one line, no control characters.
    return escape_controls(" ".join(text.split()))[:900]
