"""The ``X-Smtpconn-Tag`` header: its name and grammar, written by the relay and read back by
``send-test`` (and by help-desk triggers, so the grammar is stable)::

    X-Smtpconn-Tag: authenticated; mode=bidirectional
    X-Smtpconn-Tag: unauthenticated; mode=outbound-only
    X-Smtpconn-Tag: authenticated; mode=bidirectional; origin=relay-dsn   (a bounce we generated)

A bare word, then an RFC 6376-style tag list.
"""

from __future__ import annotations

from smtpconn.dns.tags import parse_tags

__all__ = ["AUTHENTICATED", "TAG_HEADER", "UNAUTHENTICATED", "parse_tag", "tag_value"]

TAG_HEADER = "X-Smtpconn-Tag"
AUTHENTICATED = "authenticated"
UNAUTHENTICATED = "unauthenticated"


def tag_value(authenticated: bool, mode: str, origin: str | None = None) -> str:
    value = f"{AUTHENTICATED if authenticated else UNAUTHENTICATED}; mode={mode}"
    if origin:
        value += f"; origin={origin}"
    return value


def parse_tag(value: str) -> dict[str, str]:
    """``authenticated; mode=bidirectional`` -> ``{"tag": "authenticated", "mode":
    "bidirectional"}`` (the word lowercased, values trimmed)."""
    word, _sep, rest = value.lstrip("; \t").partition(";")
    return {"tag": word.strip().lower(), **parse_tags(rest, keep_spaces=True)}
