"""How getting a token fails: one exception, its kind telling "could not ask" from "was told no"."""

from __future__ import annotations

from enum import StrEnum

from smtpconn.errors import SmtpconnFailure


class OAuthFailureKind(StrEnum):
    UNREACHABLE = "unreachable"  # no answer from the token endpoint: we cannot tell anything
    REFUSED = "refused"  # the provider answered with an OAuth error (invalid_grant, ...)
    BAD_ANSWER = "bad-answer"  # an answer that is not an OAuth token response
    NOT_LOGGED_IN = "not-logged-in"  # refresh-token flow without a usable token cache
    BAD_KEY = "bad-key"  # the service-account key file cannot be used


class OAuthFailure(SmtpconnFailure):
    """A token could not be obtained. ``error`` is the provider's OAuth error code when it gave
    one (``invalid_grant``, ``invalid_client``, ``unauthorized_client``, ...); the message never
    holds a token or a secret, only the provider's error description."""

    def __init__(
        self,
        kind: OAuthFailureKind,
        message: str,
        *,
        error: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message, fix=fix)
        self.kind = kind
        self.error = error
