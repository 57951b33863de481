"""The authserv-id of an ``Authentication-Results`` header (RFC 8601 §2.2), parsed as the
grammar says rather than compared as a string.

    authres-header = "Authentication-Results:" [CFWS] authserv-id
                     [ CFWS authres-version ] ( no-result / 1*resinfo ) [CFWS] CRLF
    authserv-id    = value                  ; RFC 2045: token / quoted-string
    authres-version = 1*DIGIT [CFWS]

Comments nest and may hold quoted-pairs (RFC 5322 §3.2.2). A relay strips every header that
claims its own id, so the parser must see the id the way a reader of the header does: through
a leading comment, inside a quoted-string, before a version number, in any case.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpconn.errors import SmtpconnFailure

__all__ = [
    "AuthservHead",
    "Unparsable",
    "claims",
    "normalise_id",
    "parse_head",
    "split_top_level",
]

# RFC 2045 tspecials: a token is everything else that is printable and not a space.
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')


class Unparsable(SmtpconnFailure, ValueError):
    """Not an RFC 8601 header head (also a ValueError); callers treat it as a claim."""


@dataclass(frozen=True, slots=True)
class AuthservHead:
    authserv_id: str
    version: int | None
    rest: str  # from the ";" of the first resinfo (or "none"), unparsed


def _skip_cfws(text: str, pos: int) -> int:
    depth = 0
    while pos < len(text):
        char = text[pos]
        if depth:
            if char == "\\":
                pos += 1  # quoted-pair: the next character is literal
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif not char.isspace():
            return pos
        pos += 1
    if depth:
        raise Unparsable("unterminated comment")
    return pos


def _quoted_string(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    pos += 1  # the opening quote
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    raise Unparsable("unterminated quoted-string")


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text):
        char = text[pos]
        if char.isspace() or char in _TSPECIALS or ord(char) < 0x20 or ord(char) == 0x7F:
            break
        pos += 1
    if pos == start:
        raise Unparsable(f"no authserv-id at {text[start : start + 10]!r}")
    return text[start:pos], pos


def parse_head(value: str) -> AuthservHead:
    """The authserv-id and version of a header value; :class:`Unparsable` if it has none."""
    pos = _skip_cfws(value, 0)
    if pos < len(value) and value[pos] == '"':
        authserv_id, pos = _quoted_string(value, pos)
    else:
        authserv_id, pos = _token(value, pos)
    after = _skip_cfws(value, pos)
    version: int | None = None
    if after < len(value) and value[after].isdigit():
        if after == pos:
            raise Unparsable("authserv-id and version run together")
        end = after
        while end < len(value) and value[end].isdigit():
            end += 1
        version = int(value[after:end])
        after = _skip_cfws(value, end)
    rest = value[after:]
    if rest and not rest.startswith(";"):
        raise Unparsable(f"unexpected {rest[:10]!r} after the authserv-id")
    if not authserv_id.strip():
        raise Unparsable("empty authserv-id")
    return AuthservHead(authserv_id, version, rest)


def normalise_id(authserv_id: str) -> str:
    """The form in which two authserv-ids compare: no surrounding space or trailing dot, any
    case."""
    return authserv_id.strip().rstrip(".").lower()


def claims(value: str, ours: str) -> bool:
    """Whether an ``Authentication-Results`` value claims to come from ``ours``.

    Comparison is case-insensitive and ignores a trailing dot. A value that does not parse but
    mentions our id anywhere counts as a claim: a reader may be more lenient than this parser,
    and a header we remove by mistake costs nothing, one we keep by mistake is a forgery.
    """
    try:
        return normalise_id(parse_head(value).authserv_id) == normalise_id(ours)
    except Unparsable:
        return normalise_id(ours) in value.lower()


def split_top_level(value: str) -> list[str]:
    """``value`` split at the semicolons that separate results: not those inside a comment or a
    quoted-string (a property value may hold one, ``header.d="x; dkim=pass"``)."""
    parts: list[str] = []
    start, depth, quoted, pos = 0, 0, False, 0
    while pos < len(value):
        char = value[pos]
        if char == "\\" and (quoted or depth):
            pos += 2
            continue
        if quoted:
            quoted = char != '"'
        elif char == '"' and not depth:
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char == ";" and not depth:
            parts.append(value[start:pos])
            start = pos + 1
        pos += 1
    parts.append(value[start:])
    return parts
