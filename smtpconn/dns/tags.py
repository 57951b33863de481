"""Tag lists (RFC 6376 §3.2): ``tag=value; tag=value``.

One parser for every record and header of that shape: DKIM keys (RFC 6376 §3.6.1), DMARC records
(RFC 7489 §6.4), MTA-STS and TLS-RPT records (RFC 8461 §3.1, RFC 8460 §3), and our own
``X-Smtpconn-Tag`` header after its leading bare word (:mod:`smtpconn.message.tag`).
"""

from __future__ import annotations


def parse_tags(text: str, *, keep_spaces: bool = False) -> dict[str, str]:
    """Tag names lowercased; a part without ``=`` is skipped; a repeated tag keeps its last value.

    White space inside a value is dropped (a DKIM ``p=`` folded over several strings) unless
    ``keep_spaces``, which only trims it.
    """
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = value.strip() if keep_spaces else "".join(value.split())
    return tags
