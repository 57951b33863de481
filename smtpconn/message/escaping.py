"""Make client-supplied text safe to write into a header field, a log line or an environment.

Every character that some reader treats as a line end or a control (C0, DEL, C1 including NEL
U+0085, and the Unicode line and paragraph separators that ``str.splitlines`` honours) and every
lone surrogate (an undecodable byte, which no encoder can write) is replaced by a visible escape, so a value can never start a new header, a new log line or
drive a terminal, and an administrator still sees what was sent.
"""

from __future__ import annotations

import re

__all__ = ["escape_controls", "has_controls"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    r"""``"a\r\nb\x1b"`` -> ``'a\\r\\nb\\x1b'``: no control or line-ending character left."""
    return _CONTROL.sub(_escape, text)


def has_controls(text: str) -> bool:
    return _CONTROL.search(text) is not None
