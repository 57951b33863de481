"""SMTP replies as the server sent them, and the few things we read out of them.

Kept free of I/O so that reply parsing, EHLO keyword parsing and queue-id extraction can be tested
against replies copied from real servers (Postfix, Exchange, Gmail).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from smtpconn.errors import SmtpconnFailure

_REPLY_LINE = re.compile(r"(\d{3})([ -]?)(.*)")


class ReplyParseError(SmtpconnFailure, ValueError):
    """A line that is not an SMTP reply (RFC 5321 §4.2): the peer is not speaking SMTP."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without the code and separator

    @property
    def text(self) -> str:
        return " / ".join(line for line in self.lines if line) or ""

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def parse_reply_line(line: str) -> tuple[int, bool, str]:
    """``(code, is_last, text)`` of one reply line; raises ``ReplyParseError``."""
    match = _REPLY_LINE.fullmatch(line.rstrip("\r\n"))
    if match is None or (match.group(2) == "" and match.group(3) != ""):
        raise ReplyParseError(f"not an SMTP reply line: {line[:80]!r}")
    return int(match.group(1)), match.group(2) != "-", match.group(3)


def parse_reply(lines: list[str]) -> Reply:
    """Join the lines of one (possibly multi-line) reply."""
    if not lines:
        raise ReplyParseError("empty reply")
    parsed = [parse_reply_line(line) for line in lines]
    codes = {code for code, _, _ in parsed}
    if len(codes) != 1:
        raise ReplyParseError(f"multi-line reply mixes codes {sorted(codes)}")
    return Reply(parsed[0][0], tuple(text for _, _, text in parsed))


@dataclass(frozen=True, slots=True)
class Extensions:
    """The EHLO keywords a server advertised (upper-case) and their parameters."""

    keywords: dict[str, str]

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        # Some old servers still advertise "AUTH=LOGIN PLAIN" (pre-RFC 2554 Outlook style).
        mechanisms = self.keywords.get("AUTH", "") + " " + self.keywords.get("AUTH=", "")
        return frozenset(m.upper() for m in mechanisms.split())

    @property
    def auth_offered(self) -> bool:
        return bool(self.auth_mechanisms)


def parse_ehlo(reply: Reply) -> Extensions:
    """The first line is the server's greeting name; each further line is ``KEYWORD [params]``."""
    keywords: dict[str, str] = {}
    for line in reply.lines[1:]:
        head, _, params = line.strip().partition(" ")
        if not head:
            continue
        if head.upper().startswith("AUTH="):
            keywords["AUTH="] = (head[5:] + " " + params).strip()
            continue
        keywords[head.upper()] = params.strip()
    return Extensions(keywords)


_QUEUE_ID_PATTERNS = (
    re.compile(r"queued as ([A-Za-z0-9._-]+)", re.IGNORECASE),  # Postfix, Exim ("id=" below)
    re.compile(r"\bid=([A-Za-z0-9._-]+)", re.IGNORECASE),  # Exim, Mimecast
    re.compile(r"\[InternalId=(\d+)", re.IGNORECASE),  # Exchange / Microsoft 365
    re.compile(r"\bOK\s+\d+\s+(\S+)\s+-\s+gsmtp", re.IGNORECASE),  # Google
    re.compile(r"^(?:\d\.\d\.\d+\s+)?Ok:?\s+([A-Za-z0-9]{6,})$", re.IGNORECASE),  # bare "Ok: ID"
)


def parse_queue_id(reply: Reply) -> str | None:
    """The server's queue id from the reply to DATA, if it gives one in a known form."""
    for line in reply.lines:
        for pattern in _QUEUE_ID_PATTERNS:
            match = pattern.search(line.strip())
            if match:
                return match.group(1)
    return None
