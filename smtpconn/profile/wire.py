"""The profile's entries as the wire's inputs: a server entry as a ``ServerSpec``, an address's
DKIM key (and signing with it).

``smtpconn.smtp`` does not know the profile's schema; the use cases (relay, send-test, verify)
turn profile entries into what the wire takes here, so that conversion is written once.
"""

from __future__ import annotations

from pathlib import Path

from smtpconn.errors import UsageError
from smtpconn.profile.model import OutboundServer, SupportAddress
from smtpconn.smtp.dkim import DkimKey, dkim_sign
from smtpconn.smtp.session import ServerSpec


def server_spec(server: OutboundServer) -> ServerSpec:
    """What the wire needs of an outbound server entry (its secret is resolved separately)."""
    return ServerSpec(server.host, server.port, server.security, server.auth, server.username)


def load_dkim_key(entry: SupportAddress, base_dir: Path) -> DkimKey | None:
    """The address's signing key (a relative path is relative to the profile), None if unset."""
    if entry.dkim is None or entry.dkim.private_key is None:
        return None  # no key, or the customer's server signs
    path = entry.dkim.private_key
    path = path if path.is_absolute() else base_dir / path
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"cannot read the DKIM private key {path}: {exc.strerror}",
            fix="check dkim.private_key in the profile (a PEM RSA private key readable by smtpconn)",
        ) from None
    return DkimKey(entry.address.domain, entry.dkim.selector, pem)


def sign_for(raw: bytes, entry: SupportAddress, base_dir: Path) -> bytes:
    """Sign as ``entry`` when the profile holds a key for it; unchanged otherwise."""
    key = load_dkim_key(entry, base_dir)
    return raw if key is None else dkim_sign(raw, key)
