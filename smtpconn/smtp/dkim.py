"""DKIM signing (RFC 6376, relaxed/relaxed, rsa-sha256) with a support address's key.

The one signer of smtpconn: the relay signs the help desk's replies with it and send-test signs
its test messages with it, so a test message proves the signature real replies will carry (same
key loading, same header list, same canonicalisation). The key is loaded from the profile by
``load_dkim_key`` in the profile package's ``wire`` module.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpconn.errors import UsageError

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
