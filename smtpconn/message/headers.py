"""Reading an RFC 5322 header block from raw bytes, the same way for every reader we care about.

Fields are found in the bytes as they are (never re-encoded, so DKIM signatures stay
verifiable); only the boundaries are decided here, and they are decided so that a field is a
field whether its reader breaks lines at CR, LF or CRLF.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

__all__ = ["header_value", "split_header_block", "strip_headers", "unfold"]

# The line ends of every reader we care about: Python's ``email`` breaks lines at CR, LF and
# CRLF alike; most MTAs and help desks at LF (or CRLF) only.
_LINE_END = re.compile(rb"\r\n|\r|\n")


def _lines(raw: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(content, terminator) pairs, breaking at CR, LF and CRLF; the last may lack one. Lazy:
    the header readers stop at the blank line, and splitting a whole 10 KB body into a list
    first was 10 % of the relay's GIL time under load (benchmarks/README.md)."""
    pos = 0
    for match in _LINE_END.finditer(raw):
        yield raw[pos : match.start()], match.group()
        pos = match.end()
    if pos < len(raw):
        yield raw[pos:], b""


def split_header_block(raw: bytes) -> tuple[list[bytes], bytes]:
    """(header fields each with its folded continuation lines, the rest from the blank line).

    The bytes are kept as they are (DKIM stays verifiable); only the boundaries are decided here,
    so that a field is a field for every reader: a line that begins after a bare CR is its own
    field if it looks like one (a CR-breaking reader sees it so), and otherwise stays with the
    field before it (an LF-breaking reader sees it so) instead of ending the header block.
    """
    fields: list[bytes] = []
    pos = 0
    after_lf = True  # the line starts where an LF-only reader starts one too
    for content, end in _lines(raw):
        line = content + end
        if after_lf and not content and (end.endswith(b"\n") or end == b"\r"):
            break  # the blank line: the body follows
        if content[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif b":" in content:
            fields.append(line)
        elif not after_lf and fields:
            fields[-1] += line  # hidden behind a bare CR: LF readers still read it as header
        else:
            break  # not a header: the body starts here (a message without a blank line)
        pos += len(line)
        after_lf = end.endswith(b"\n")
    return fields, raw[pos:]


def strip_headers(raw: bytes, drop: Callable[[str, str], bool]) -> bytes:
    """Remove the header fields for which ``drop(name, value)`` is true."""
    fields, rest = split_header_block(raw)
    kept = []
    for field in fields:
        name, _, value = field.decode("latin-1").partition(":")
        if not drop(name.strip(), unfold(value)):
            kept.append(field)
    return b"".join(kept) + rest


def header_value(raw: bytes, name: str) -> str | None:
    """The unfolded value of the first field called ``name`` (any case), or None."""
    fields, _ = split_header_block(raw)
    for field in fields:
        fname, _, value = field.decode("utf-8", "replace").partition(":")
        if fname.strip().lower() == name.lower():
            return unfold(value)
    return None


def unfold(value: str) -> str:
    """A field value on one line: folding and runs of white space become one space."""
    return " ".join(value.split())
