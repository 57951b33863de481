"""A forwarder's ARC sealing (RFC 8617) for the lab, with dkimpy's ``arc_sign``.

dkimpy reads the forwarder's own Authentication-Results through the optional ``authres``
package, which the project does not depend on (the relay only verifies ARC, which does not need
it). The forwarder here writes one simple Authentication-Results line itself, so a parser of
exactly that shape stands in for ``authres`` while dkimpy seals: ``authserv-id; method=result
props; ...`` without comments.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import dkim


@dataclass(frozen=True)
class _Result:
    method: str
    result: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Header:
    authserv_id: str
    results: list[_Result]

    @classmethod
    def parse(cls, line: str) -> _Header:
        value = line.partition(":")[2]
        parts = [p.strip() for p in value.split(";")]
        results = []
        for part in parts[1:]:
            method, _, rest = part.partition("=")
            results.append(_Result(method.strip(), rest.split()[0] if rest else "", part))
        return cls(parts[0], results)


class _SyntaxError(Exception):
    pass


_AUTHRES = types.SimpleNamespace(
    AuthenticationResultsHeader=_Header,
    AuthresNotFoundError=RuntimeError,
    core=types.SimpleNamespace(SyntaxError=_SyntaxError),
)


def arc_seal(message: bytes, selector: str, domain: str, key_pem: bytes, srv_id: str) -> bytes:
    """``message`` with an ARC set on top, sealed by ``domain`` over the forwarder's own
    ``Authentication-Results: <srv_id>; ...`` (which must be in the message)."""
    missing = object()
    before = getattr(dkim, "authres", missing)
    if before is missing or not hasattr(before, "AuthenticationResultsHeader"):
        dkim.authres = _AUTHRES
    try:
        headers = dkim.arc_sign(
            message, selector.encode(), domain.encode(), key_pem, srv_id.encode()
        )
    finally:
        if before is missing:
            del dkim.authres
        else:
            dkim.authres = before
    if not headers:
        raise ValueError(f"dkimpy made no ARC set (no Authentication-Results: {srv_id})")
    return b"".join(headers) + message
