"""What the listeners accept on the wire, as pure functions of the bytes received.

* Control characters (C0 and DEL) in an envelope path, a parameter or a HELO name are refused:
  a bare CR inside a quoted local part is valid RFC 5322 syntax to a parser, but written into a
  header or a log it starts a new line the client chose.
* SMTPUTF8 (RFC 6531): a non-ASCII address only in a transaction whose MAIL FROM carries the
  ``SMTPUTF8`` parameter (``553 5.6.7`` otherwise); bytes that are not UTF-8 (overlong forms,
  lone continuation bytes, surrogates) are refused wherever they appear in a command, and so are
  the Unicode controls (C1, NEL, the line and paragraph separators) in a path. Parameters stay
  ASCII (RFC 5321 esmtp-value). In an SMTPUTF8 transaction the header block must be UTF-8
  (RFC 6532 §3.2).
* DATA ends only at CRLF.CRLF. A bare CR or bare LF inside DATA is refused (``550 5.6.11``, as
  Postfix's ``smtpd_forbid_bare_newline`` and chasquid do) or, if the profile asks for it,
  turned into CRLF: either way no ``\\n.\\n``-style marker a downstream server might honour is
  ever stored or passed on (SMTP smuggling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpconn.message.escaping import has_controls

MAIL_PATH_REFUSED = "553 5.1.7 Control characters are not allowed in the sender address"
RCPT_PATH_REFUSED = "553 5.1.3 Control characters are not allowed in the recipient address"
PARAMS_REFUSED = "501 5.5.4 Control characters are not allowed in command parameters"
HELO_REFUSED = "501 5.5.4 Control characters are not allowed in the HELO/EHLO name"
BARE_NEWLINE_REFUSED = (
    "550 5.6.11 Bare CR or bare LF in the message; lines must end with CRLF "
    "(see https://www.postfix.org/smtp-smuggling.html)"
)
NOT_UTF8 = "553 5.6.7 The command is not valid UTF-8 (overlong or broken byte sequence)"
MAIL_NEEDS_SMTPUTF8 = (
    "553 5.6.7 A non-ASCII sender address needs the SMTPUTF8 parameter on MAIL FROM (RFC 6531)"
)
RCPT_NEEDS_SMTPUTF8 = (
    "553 5.6.7 A non-ASCII recipient address needs a transaction started with SMTPUTF8 (RFC 6531)"
)
PARAMS_NOT_ASCII = "501 5.5.4 Command parameters must be ASCII"
HEADER_NOT_UTF8 = "550 5.6.7 The header of an SMTPUTF8 message must be UTF-8 (RFC 6532)"
TOO_MUCH_DATA = "552 5.3.4 Error: Too much mail data"
LINE_TOO_LONG = "500 5.5.6 Line too long (see RFC5321 4.5.3.1.6)"


def has_control(text: str) -> bool:
    return any(c < " " or c == "\x7f" for c in text)


def _path_end(arg: str) -> int:
    """Where the path ends in ``<path> params`` (angle brackets inside a quoted local part or
    escaped with a backslash do not count); without brackets the path is the first word."""
    text = arg.lstrip()
    offset = len(arg) - len(text)
    if not text.startswith("<"):
        space = text.find(" ")
        return len(arg) if space < 0 else offset + space
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return offset + index + 1
    return len(arg)


def envelope_refusal(arg: str | None, *, path_reply: str) -> str | None:
    """The reply refusing a MAIL/RCPT argument with a control character, or None if it has
    none. ``arg`` is what follows the command word (``FROM:<path> params``)."""
    if arg is None or not has_control(arg):
        return None
    _, colon, rest = arg.partition(":")
    if not colon:
        return path_reply
    end = _path_end(rest)
    return path_reply if has_control(rest[:end]) else PARAMS_REFUSED


def _not_utf8(text: str) -> bool:
    # The listener decodes command arguments as UTF-8 with surrogateescape: every byte that was
    # not part of a valid sequence is a lone surrogate now.
    return any("\udc80" <= char <= "\udcff" for char in text)


def utf8_refusal(arg: str | None, *, smtputf8: bool | None, path_reply: str) -> str | None:
    """The reply refusing a MAIL/RCPT argument for its non-ASCII content, or None.

    ``smtputf8`` is whether the transaction declared SMTPUTF8; None for MAIL FROM itself, whose
    own parameters say it. ``path_reply`` refuses a control character in the path.
    """
    if arg is None or arg.isascii():
        return None
    if _not_utf8(arg):
        return NOT_UTF8
    _, _colon, rest = arg.partition(":")
    end = _path_end(rest)
    path, params = rest[:end], rest[end:]
    if not params.isascii():
        return PARAMS_NOT_ASCII
    if has_controls(path):
        return path_reply
    if smtputf8 is None:
        if "SMTPUTF8" not in params.upper().split():
            return MAIL_NEEDS_SMTPUTF8
    elif not smtputf8:
        return RCPT_NEEDS_SMTPUTF8
    return None


def header_refusal(content: bytes, *, smtputf8: bool) -> str | None:
    """For an SMTPUTF8 message: a header block that is not UTF-8 is refused (the transaction
    promised UTF-8, and every sink passes the header on as it is)."""
    if not smtputf8:
        return None
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[:end]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return HEADER_NOT_UTF8
    return None


@dataclass
class DataReader:
    """Assembles DATA from the pieces the stream gives (lines ending in LF, or fragments of an
    over-long line): ends at CRLF.CRLF only, un-stuffs dots, enforces the size and line limits
    and the bare-newline rule. Problems are answered once the real end arrives (RFC 5321
    §4.2.5), with everything received so far already dropped."""

    size_limit: int | None
    line_limit: int
    normalize: bool
    problem: str | None = None
    held: int = 0  # bytes of message kept so far
    size: int = 0
    _data: bytearray = field(default_factory=bytearray)
    _partial: bytearray = field(default_factory=bytearray)
    _mid_line: bool = False
    _after_crlf: bool = True  # the DATA command itself ended the previous line

    def feed(self, piece: bytes) -> bool:
        """Take one piece; True once it was the end-of-data line."""
        if not self._mid_line and self._after_crlf and piece == b".\r\n":
            return True
        self.size += len(piece)
        if self.size_limit and self.size > self.size_limit:
            self._fail(TOO_MUCH_DATA)
        if not piece.endswith(b"\n"):
            self._mid_line = True
            if self.problem is None:
                self._partial += piece
                if len(self._partial) > self.line_limit:
                    self._fail(LINE_TOO_LONG)
            return False
        line = bytes(self._partial) + piece if self._partial else piece
        self._partial.clear()
        self._mid_line = False
        if len(line) > self.line_limit:
            self._fail(LINE_TOO_LONG)
        crlf = line.endswith(b"\r\n")
        body = line[:-2] if crlf else line[:-1]
        after_crlf, self._after_crlf = self._after_crlf, crlf
        if (not crlf or b"\r" in body) and not self.normalize:
            self._fail(BARE_NEWLINE_REFUSED)
        if self.problem is not None:
            return False
        # Only a line the client started after a real CRLF was dot-stuffed by it.
        if after_crlf and body.startswith(b"."):
            body = body[1:]
        before = len(self._data)
        if self.normalize:
            self._data += b"\r\n".join(body.split(b"\r"))
        else:
            self._data += body
        self._data += b"\r\n"
        self.held += len(self._data) - before
        return False

    def _fail(self, reply: str) -> None:
        if self.problem is None:
            self.problem = reply
        self._data.clear()
        self._partial.clear()
        self.held = 0

    def content(self) -> bytes:
        data = bytes(self._data)
        self._data.clear()
        return data
