"""DKIM signing (RFC 6376, relaxed/relaxed, rsa-sha256) with a support address's profile key.

The one signer of smtpconn: the relay signs the help desk's replies with it and send-test signs
its test messages with it, so a test message proves the signature real replies will carry (same
key loading, same header list, same canonicalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smtpconn.errors import UsageError
from smtpconn.profile.model import SupportAddress

# Signed when present (dkimpy skips the absent ones). The threading headers are in so a reply
# cannot be re-threaded under the signature; X-Smtpconn-Test so a test token cannot be swapped.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"x-smtpconn-test",
)


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    private_key_pem: bytes

    def __repr__(self) -> str:  # the key is a secret: never in a log line or a traceback
        return f"DkimKey(domain={self.domain!r}, selector={self.selector!r})"


def load_dkim_key(entry: SupportAddress, base_dir: Path) -> DkimKey | None:
    """The address's signing key (a relative path is relative to the profile), None if unset."""
    if entry.dkim is None:
        return None
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


def dkim_sign(raw: bytes, key: DkimKey) -> bytes:
    """``raw`` with a DKIM-Signature header prepended."""
    import dkim as dkimpy

    try:
        signature: bytes = dkimpy.sign(
            raw,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private_key_pem,
            include_headers=list(SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"relaxed"),
        )
    except dkimpy.DKIMException as exc:
        raise UsageError(
            f"cannot DKIM-sign with the profile's key for {key.domain}: {exc}",
            fix="check dkim.private_key in the profile (a PEM RSA private key)",
        ) from None
    return signature + raw


def sign_for(raw: bytes, entry: SupportAddress, base_dir: Path) -> bytes:
    """Sign as ``entry`` when the profile holds a key for it; unchanged otherwise."""
    key = load_dkim_key(entry, base_dir)
    return raw if key is None else dkim_sign(raw, key)
