"""ARC (RFC 8617) as far as the inbound policy needs it: whether the chain validates (dkimpy's
``arc_verify``), who sealed it last (the ``d=`` of the ARC-Seal with the highest ``i=``), and
what that sealer's ARC-Authentication-Results say about DMARC.

A forwarder that changes a message (a footer, a subject tag) breaks the author's DKIM signature
and SPF no longer matches the forwarder's IP, so DMARC fails here although it passed where the
forwarder received it. The ARC set records that earlier verdict; it is only believed for a sealer
the address's profile entry trusts (anyone can seal, only a trusted sealer's word counts).
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpconn.dns.tags import parse_tags
from smtpconn.message.authserv import split_top_level
from smtpconn.message.headers import split_header_block, unfold

ARC_SEAL = "arc-seal"
ARC_RESULTS = "arc-authentication-results"
MAX_INSTANCES = 50  # RFC 8617 §4.2.1: i= is 1..50


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    cv: str  # pass | fail | none: the chain validation of the whole set (arc_verify)
    sealer: str | None  # d= of the latest ARC-Seal (lower case), None if unreadable
    dmarc: str | None  # dmarc= result in the latest ARC-Authentication-Results, if any


def _fields(message: bytes) -> list[tuple[str, str]]:
    fields, _body = split_header_block(message)
    out = []
    for field in fields:
        name, _, value = field.decode("utf-8", "replace").partition(":")
        out.append((name.strip().lower(), unfold(value)))
    return out


def has_arc(message: bytes) -> bool:
    return any(name == ARC_SEAL for name, _ in _fields(message))


def _instance(value: str) -> int | None:
    text = value.strip()
    if not text.lower().startswith("i="):
        head = parse_tags(value).get("i")
    else:
        head = text[2:].split(";", 1)[0]
    try:
        number = int((head or "").strip())
    except ValueError:
        return None
    return number if 1 <= number <= MAX_INSTANCES else None


def latest_instance(message: bytes) -> tuple[str | None, str | None]:
    """(the latest ARC-Seal's d=, the dmarc= result of that instance's ARC-Authentication-Results)."""
    seals: dict[int, str] = {}
    results: dict[int, str] = {}
    for name, value in _fields(message):
        number = _instance(value)
        if number is None:
            continue
        if name == ARC_SEAL:
            seals.setdefault(number, value)
        elif name == ARC_RESULTS:
            results.setdefault(number, value)
    if not seals:
        return None, None
    top = max(seals)
    domain = parse_tags(seals[top]).get("d", "").strip().rstrip(".").lower() or None
    return domain, _dmarc_result(results.get(top, ""))


def _dmarc_result(value: str) -> str | None:
    # "i=1; authserv-id; spf=pass ...; dmarc=pass (p=none) header.from=x": the first part is
    # the instance, the second the authserv-id, then one result per part.
    for part in split_top_level(value)[2:]:
        method, eq, rest = part.strip().partition("=")
        if eq and method.strip().lower() == "dmarc":
            word = rest.strip().split(None, 1)
            return word[0].lower() if word else None
    return None
