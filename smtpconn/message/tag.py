"""The ``X-Smtpconn-Tag`` header: its name and grammar, written by the relay and read back by
``send-test`` (and by help-desk triggers, so the grammar is stable)::

    X-Smtpconn-Tag: authenticated; mode=bidirectional
    X-Smtpconn-Tag: unauthenticated; mode=outbound-only; auth=fail
    X-Smtpconn-Tag: authenticated; mode=bidirectional; origin=relay-dsn   (a bounce we generated)

A bare word, then an RFC 6376-style tag list. ``auth=pass|fail|none`` is on unauthenticated mail
only: the DMARC result the relay computed (or a trusted ARC sealer's), so help-desk triggers can
route on it.
"""

from __future__ import annotations

from smtpconn.dns.tags import parse_tags

__all__ = ["AUTHENTICATED", "TAG_HEADER", "UNAUTHENTICATED", "parse_tag", "tag_value"]

TAG_HEADER = "X-Smtpconn-Tag"
AUTHENTICATED = "authenticated"
UNAUTHENTICATED = "unauthenticated"


def tag_value(
    authenticated: bool, mode: str, origin: str | None = None, auth: str | None = None
) -> str:
    value = f"{AUTHENTICATED if authenticated else UNAUTHENTICATED}; mode={mode}"
    if auth:
        value += f"; auth={auth}"
    if origin:
        value += f"; origin={origin}"
    return value


def parse_tag(value: str) -> dict[str, str]:
    """``authenticated; mode=bidirectional`` -> ``{"tag": "authenticated", "mode":
    "bidirectional"}`` (the word lowercased, values trimmed)."""
    word, _sep, rest = value.lstrip("; \t").partition(";")
    return {"tag": word.strip().lower(), **parse_tags(rest, keep_spaces=True)}
