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

import enum
import re
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


def _has_ascii_control(text: str) -> bool:
    """C0 or DEL only, narrower than ``message.escaping.has_controls`` on purpose: the
    non-ASCII cases (broken UTF-8, C1, U+2028) of a MAIL/RCPT argument are
    :func:`utf8_refusal`'s, which answers them with their own replies and log reasons."""
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


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# <dot-atom@hostname> and parameters after plain spaces: what every MTA sends. The email
# package's full RFC 5322 parser (aiosmtpd's) costs ~7 % of the event loop under load
# (benchmarks/README.md); anything else (quotes, comments, literals, UTF-8) still goes to it.
_SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?: +([^ (\r\n][^\r\n]*))?"
)


def simple_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) of a plain ``<local@domain> params`` argument, exactly as
    aiosmtpd's parser gives them; None when the argument needs that parser."""
    found = _SIMPLE_PATH.fullmatch(arg)
    if found is None:
        return None
    return found.group(1), found.group(2) or ""


def envelope_refusal(arg: str | None, *, path_reply: str) -> str | None:
    """The reply refusing a MAIL/RCPT argument with a control character, or None if it has
    none. ``arg`` is what follows the command word (``FROM:<path> params``)."""
    if arg is None or not _has_ascii_control(arg):
        return None
    _, colon, rest = arg.partition(":")
    if not colon:
        return path_reply
    end = _path_end(rest)
    return path_reply if _has_ascii_control(rest[:end]) else PARAMS_REFUSED


def _not_utf8(text: str) -> bool:
    # The listener decodes command arguments as UTF-8 with surrogateescape: every byte that was
    # not part of a valid sequence is a lone surrogate now.
    return any("\udc80" <= char <= "\udcff" for char in text)


def utf8_refusal(
    arg: str | None, *, smtputf8: bool | None, path_reply: str
) -> tuple[str, str] | None:
    """``(reply, reason)`` refusing a MAIL/RCPT argument for its non-ASCII content, or None;
    the reason is the log's word for it.

    ``smtputf8`` is whether the transaction declared SMTPUTF8; None for MAIL FROM itself, whose
    own parameters say it. ``path_reply`` refuses a control character in the path.
    """
    if arg is None or arg.isascii():
        return None
    if _not_utf8(arg):
        return NOT_UTF8, "not-utf8"
    _, _colon, rest = arg.partition(":")
    end = _path_end(rest)
    path, params = rest[:end], rest[end:]
    if not params.isascii():
        return PARAMS_NOT_ASCII, "non-ascii-parameter"
    if has_controls(path):
        return path_reply, "control-character"
    if smtputf8 is None:
        if "SMTPUTF8" not in params.upper().split():
            return MAIL_NEEDS_SMTPUTF8, "smtputf8-required"
    elif not smtputf8:
        return RCPT_NEEDS_SMTPUTF8, "smtputf8-required"
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


END_LINE = b".\r\n"
END_MARKER = b"\r\n.\r\n"  # CRLF.CRLF: the only end of DATA


@dataclass
class DataReader:
    """Assembles DATA from whatever the stream gives (whole buffers, lines, or fragments of a
    line): ends at CRLF.CRLF only, un-stuffs dots, enforces the size and line limits and the
    bare-newline rule. Problems are answered once the real end arrives (RFC 5321 §4.2.5), with
    everything received so far already dropped.

    A buffer of whole CRLF lines with nothing unusual in it (the common case) is taken with a
    few byte-level scans (:meth:`_feed_fast`); anything else goes line by line through the same
    rules, so both paths accept and refuse exactly the same streams."""

    size_limit: int | None
    line_limit: int
    normalize: bool
    problem: str | None = None
    held: int = 0  # bytes of message kept so far
    size: int = 0
    _data: bytearray = field(default_factory=bytearray)
    _partial: bytearray = field(default_factory=bytearray)  # the current line, when kept
    _line: int = 0  # bytes of the current (unfinished) line received so far
    _head: bytes = b""  # its first bytes, enough to recognise the end line
    # Whether the current line's bytes so far end with CR. Kept apart from _partial, which is
    # dropped once there is a problem: a CR and its LF in separate reads are still a CRLF, and
    # the end line after them must still end DATA.
    _cr_last: bool = False
    _after_crlf: bool = True  # the DATA command itself ended the previous line

    def feed(self, chunk: bytes) -> bool:
        """Take the next bytes of the stream; True once they ended with the end-of-data line.
        The caller never passes bytes beyond that line (see :func:`data_read_plan`)."""
        cut = chunk.rfind(b"\n") + 1
        if cut and self.problem is None and not self.normalize:
            # Without a problem the unfinished line is all in _partial: it leads the lines.
            whole = bytes(self._partial) + chunk[:cut] if self._line else chunk[:cut]
            done = self._feed_fast(whole)
            if done is not None:
                self._partial.clear()
                self._line, self._head, self._cr_last = 0, b"", False
                if cut < len(chunk):
                    self._piece(chunk[cut:], complete=False)
                return done
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline + 1
            if self._piece(chunk[start:end], complete=newline >= 0):
                return True
            start = end
        return False

    def _feed_fast(self, chunk: bytes) -> bool | None:
        """Whole CRLF lines, none too long, no bare CR or LF: un-stuffed with ``replace``.
        None when the chunk needs the line-by-line rules."""
        done = chunk.endswith(END_MARKER) or chunk == END_LINE
        body = chunk[:-3] if done else chunk
        if body and not body.endswith(b"\r\n"):
            return None
        lines = body.count(b"\n")
        if body.count(b"\r") != lines or body.count(b"\r\n") != lines:
            return None  # a bare CR or LF
        if body.startswith(END_LINE) or END_MARKER in body:
            return None  # an end line before the chunk's end: never passed, never guessed
        if len(body) >= self.line_limit and self._long_line(body):
            return None
        self.size += len(body)
        if self.size_limit and self.size > self.size_limit:
            self._fail(TOO_MUCH_DATA)
            return done
        # Every line here starts after a real CRLF, so every leading dot was stuffed.
        if body.startswith(b"."):
            body = body[1:]
        unstuffed = body.replace(b"\r\n.", b"\r\n")
        self._data += unstuffed
        self.held += len(unstuffed)
        return done

    def _long_line(self, body: bytes) -> bool:
        """Whether a line of ``body`` (whole lines) is longer than the limit, CRLF included:
        each step jumps to the last LF within one line's length (a regex over the body cost
        20 times more, benchmarks/README.md)."""
        last = -1  # the LF ending the lines checked so far
        while len(body) - last > self.line_limit:
            found = body.rfind(b"\n", last + 1, last + 1 + self.line_limit)
            if found < 0:
                return True
            last = found
        return False

    def _piece(self, piece: bytes, *, complete: bool) -> bool:
        """One line, or a fragment of one (``complete`` False: no LF yet)."""
        if len(self._head) < len(END_LINE):
            self._head += piece[: len(END_LINE) - len(self._head)]
        self._line += len(piece)
        cr_before, self._cr_last = self._cr_last, piece.endswith(b"\r")
        if not complete:
            # Kept up to the line limit only: an endless line never fills memory.
            if self.problem is None:
                self._partial += piece
                if len(self._partial) > self.line_limit:
                    self._fail(LINE_TOO_LONG)
            return False
        line_len, self._line = self._line, 0
        head, self._head = self._head, b""
        crlf = piece.endswith(b"\r\n") or (piece == b"\n" and cr_before)
        if self._after_crlf and line_len == len(END_LINE) and head == END_LINE:
            return True
        line = bytes(self._partial) + piece if self._partial else piece
        self._partial.clear()
        self.size += line_len
        if self.size_limit and self.size > self.size_limit:
            self._fail(TOO_MUCH_DATA)
        if line_len > self.line_limit:
            self._fail(LINE_TOO_LONG)
        self._take_line(line, crlf=crlf)
        return False

    def _take_line(self, line: bytes, *, crlf: bool) -> None:
        """``crlf``: the line ended with CR LF, told by the caller because the CR may have
        come in an earlier fragment that is no longer kept."""
        body = line[:-2] if crlf else line[:-1]
        after_crlf, self._after_crlf = self._after_crlf, crlf
        if (not crlf or b"\r" in body) and not self.normalize:
            self._fail(BARE_NEWLINE_REFUSED)
        if self.problem is not None:
            return
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


# The prefixes of END_MARKER a stream position can end with and still be completed into it by
# the next bytes: reading past such a position must not skip the end.
_MARKER_PREFIXES = (b"\r", b"\r\n.", b"\r\n.\r")


class ReadStep(enum.Enum):
    """How much to read next so that a read never goes past the end of DATA (whatever follows
    it, such as pipelined commands, stays in the stream for the command loop)."""

    HEAD = "head"  # exactly 3 bytes: at a line start after CRLF, the end line may come next
    LINE = "line"  # up to the next LF: the bytes so far may be the first part of CRLF.CRLF
    BULK = "bulk"  # up to the next CRLF.CRLF (or as much as is buffered)


def data_read_plan(tail: bytes) -> ReadStep:
    """The next read after a stream whose last bytes are ``tail`` (at least 4 of them, or all
    with the DATA command's own CRLF in front)."""
    if tail.endswith(b"\r\n"):
        return ReadStep.HEAD
    if tail.endswith(_MARKER_PREFIXES):
        return ReadStep.LINE
    return ReadStep.BULK
