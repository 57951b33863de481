"""SASL for SMTP AUTH (RFC 4954): which mechanism to use and what to send, never what to print.

Only mechanisms whose credential can be checked by the server without a shared clear-text store
on our side are needed here: PLAIN and LOGIN (password, always inside TLS) and XOAUTH2 (an OAuth
2.0 bearer token, Microsoft 365 and Google Workspace).
"""

from __future__ import annotations

import base64

from smtpconn.smtp.vocab import AuthMechanism

# "auto" never picks XOAUTH2: a password is not a bearer token, so sending it as one would only
# fail (and leak it to a log on the server side). PLAIN before LOGIN: one round trip, standard.
AUTO_PREFERENCE = ("PLAIN", "LOGIN")

REDACTED = "<redacted>"


def choose_mechanism(configured: AuthMechanism, offered: frozenset[str]) -> str | None:
    """The mechanism to use, or ``None`` when the server offers nothing we may use."""
    if configured is AuthMechanism.AUTO:
        for name in AUTO_PREFERENCE:
            if name in offered:
                return name
        return None
    name = configured.value.upper()
    return name if name in offered else None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain_response(username: str, secret: str) -> str:
    """RFC 4616: authzid NUL authcid NUL password (empty authzid)."""
    return b64(b"\0" + username.encode("utf-8") + b"\0" + secret.encode("utf-8"))


def xoauth2_response(username: str, token: str) -> str:
    """The Google/Microsoft XOAUTH2 initial response: ``user=U^Aauth=Bearer T^A^A``."""
    return b64(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())


def decode_challenge(text: str) -> str:
    """A 334 challenge as text (LOGIN's "Username:", XOAUTH2's JSON error) for messages."""
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8", errors="replace")
    except ValueError:
        return text


def wanted_text(configured: AuthMechanism) -> str:
    """The mechanisms ``configured`` accepts, as a message names them."""
    return (
        " or ".join(AUTO_PREFERENCE)
        if configured is AuthMechanism.AUTO
        else configured.value.upper()
    )


def xoauth2_advice(configured: AuthMechanism, offered: frozenset[str]) -> str | None:
    """What to do when the server offers XOAUTH2 and another mechanism is configured (the one
    wording of this advice, for verify's checks and for a failed login alike); None otherwise."""
    if "XOAUTH2" not in offered or configured is AuthMechanism.XOAUTH2:
        return None
    return (
        "the server offers XOAUTH2 and may have basic AUTH switched off (Microsoft 365, "
        'Google Workspace): set outbound.auth = "xoauth2" and outbound.secret to a reference '
        "holding an OAuth 2.0 access token"
    )
