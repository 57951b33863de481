"""ARC (RFC 8617) as far as the inbound policy needs it: whether the chain validates (dkimpy's
``arc_verify``), who sealed it last and what that sealer's ARC-Authentication-Results say about
DMARC — both read from the instance dkimpy itself verified (its result data), never from a parse
of our own: a second reading of ``i=`` that disagreed with dkimpy's (``i=+9``, an Arabic-Indic
digit) let a forged, unsigned "trusted" set sit on top of a valid chain sealed by anyone.

A forwarder that changes a message (a footer, a subject tag) breaks the author's DKIM signature
and SPF no longer matches the forwarder's IP, so DMARC fails here although it passed where the
forwarder received it. The ARC set records that earlier verdict; it is only believed for a sealer
the address's profile entry trusts (anyone can seal, only a trusted sealer's word counts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smtpconn.message.authserv import split_top_level
from smtpconn.message.headers import split_header_block, unfold

ARC_SEAL = "arc-seal"


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    cv: str  # pass | fail | none: the chain validation of the whole set (arc_verify)
    sealer: str | None  # d= of the top ARC-Seal dkimpy verified (lower case); None unless cv=pass
    dmarc: str | None  # dmarc= in that instance's ARC-Authentication-Results, if any


def _fields(message: bytes) -> list[tuple[str, str]]:
    fields, _body = split_header_block(message)
    out = []
    for field in fields:
        name, _, value = field.decode("utf-8", "replace").partition(":")
        out.append((name.strip().lower(), unfold(value)))
    return out


def has_arc(message: bytes) -> bool:
    return any(name == ARC_SEAL for name, _ in _fields(message))


def verdict_of(cv: bytes | None, results: Sequence[Mapping[str, Any]]) -> ArcVerdict:
    """The verdict out of ``dkim.arc_verify``'s (cv, result data): dkimpy lists the instances it
    verified from the highest down, each with its ARC-Seal's ``as-domain`` and the
    ``aar-value`` it verified that seal over. Sealer and dmarc= are only read when the whole
    chain passed (what a failed chain's top instance says is nobody's word)."""
    validation = (cv or b"fail").decode("ascii", "replace").lower()
    if validation != "pass" or not results:
        return ArcVerdict(validation if validation in ("pass", "none") else "fail", None, None)
    top = results[0]
    domain = _text(top.get("as-domain")).strip().rstrip(".").lower() or None
    return ArcVerdict("pass", domain, _dmarc_result(_text(top.get("aar-value"))))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _dmarc_result(value: str) -> str | None:
    # "i=1; authserv-id; spf=pass ...; dmarc=pass (p=none) header.from=x": the first part is
    # the instance, the second the authserv-id, then one result per part.
    for part in split_top_level(value)[2:]:
        method, eq, rest = part.strip().partition("=")
        if eq and method.strip().lower() == "dmarc":
            word = rest.strip().split(None, 1)
            return word[0].lower() if word else None
    return None
