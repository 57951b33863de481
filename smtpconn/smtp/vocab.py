"""The client's settings vocabulary: how a connection is secured and which SASL mechanism logs in.

The wire owns these words because it is what acts on them; the profile stores them (its
``outbound.security`` and ``outbound.auth`` keys) and imports them from here.
"""

from __future__ import annotations

from enum import StrEnum


class Security(StrEnum):
    STARTTLS = "starttls"  # RFC 3207 on the submission port
    TLS = "tls"  # RFC 8314 implicit TLS


class AuthMechanism(StrEnum):
    AUTO = "auto"
    PLAIN = "plain"
    LOGIN = "login"
    XOAUTH2 = "xoauth2"  # a bearer token; OAUTHBEARER when only that is offered
    OAUTHBEARER = "oauthbearer"  # RFC 7628, the standard form of the same bearer token
