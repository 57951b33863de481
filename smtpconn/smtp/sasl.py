"""SASL for SMTP AUTH (RFC 4954): which mechanism to use and what to send, never what to print.

Only mechanisms whose credential can be checked by the server without a shared clear-text store
on our side are needed here: PLAIN and LOGIN (password, always inside TLS), and an OAuth 2.0
bearer token as XOAUTH2 (Microsoft 365, Google Workspace) or as OAUTHBEARER (RFC 7628, the
standard form: Google, Dovecot, and any server that offers it instead of XOAUTH2).
"""

from __future__ import annotations

import base64

from smtpconn.smtp.vocab import AuthMechanism

# "auto" never picks XOAUTH2: a password is not a bearer token, so sending it as one would only
# fail (and leak it to a log on the server side). PLAIN before LOGIN: one round trip, standard.
AUTO_PREFERENCE = ("PLAIN", "LOGIN")

REDACTED = "<redacted>"


# A bearer token goes as XOAUTH2 and, where the server offers only that, as OAUTHBEARER (the same
# token, the standard framing); "oauthbearer" configured means that mechanism alone.
TOKEN_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
_ACCEPTED = {
    AuthMechanism.AUTO: AUTO_PREFERENCE,
    AuthMechanism.XOAUTH2: TOKEN_MECHANISMS,
    AuthMechanism.OAUTHBEARER: ("OAUTHBEARER",),
}


def accepted(configured: AuthMechanism) -> tuple[str, ...]:
    """The mechanisms ``configured`` may log in with, in order of preference."""
    return _ACCEPTED.get(configured, (configured.value.upper(),))


def choose_mechanism(configured: AuthMechanism, offered: frozenset[str]) -> str | None:
    """The mechanism to use, or ``None`` when the server offers nothing we may use."""
    return next((name for name in accepted(configured) if name in offered), None)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain_response(username: str, secret: str) -> str:
    """RFC 4616: authzid NUL authcid NUL password (empty authzid)."""
    return b64(b"\0" + username.encode("utf-8") + b"\0" + secret.encode("utf-8"))


def xoauth2_response(username: str, token: str) -> str:
    """The Google/Microsoft XOAUTH2 initial response: ``user=U^Aauth=Bearer T^A^A``."""
    return b64(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())


def _saslname(username: str) -> str:
    """RFC 5801 saslname: "," and "=" are escaped in the GS2 header's authzid."""
    return username.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_response(username: str, token: str, host: str, port: int) -> str:
    """RFC 7628 3.1 initial response: GS2 header with the user as authzid, then host, port and
    the bearer token, each ended by ^A, the whole ended by ^A^A."""
    return b64(
        f"n,a={_saslname(username)},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
    )


# RFC 7628 3.2.3: after the server's error challenge the client sends a single ^A to end it.
OAUTHBEARER_ABORT = b64(b"\x01")


def decode_challenge(text: str) -> str:
    """A 334 challenge as text (LOGIN's "Username:", XOAUTH2's JSON error) for messages."""
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8", errors="replace")
    except ValueError:
        return text


def wanted_text(configured: AuthMechanism) -> str:
    """The mechanisms ``configured`` accepts, as a message names them."""
    return " or ".join(accepted(configured))


def xoauth2_advice(configured: AuthMechanism, offered: frozenset[str]) -> str | None:
    """What to do when the server offers XOAUTH2 and another mechanism is configured (the one
    wording of this advice, for verify's checks and for a failed login alike); None otherwise."""
    token_offered = any(name in offered for name in TOKEN_MECHANISMS)
    if not token_offered or configured in (AuthMechanism.XOAUTH2, AuthMechanism.OAUTHBEARER):
        return None
    return (
        "the server offers XOAUTH2 and may have basic AUTH switched off (Microsoft 365, "
        'Google Workspace): set outbound.auth = "xoauth2" and outbound.secret to a reference '
        "holding an OAuth 2.0 access token"
    )
