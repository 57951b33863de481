"""A token source: one address's way of obtaining XOAUTH2 access tokens, with a cache.

``token()`` returns the cached token while it has more than ``margin`` seconds left and fetches a
new one otherwise, so a caller never sends one that expires on the way; ``invalidate()`` drops it
(after a 535 the server may know better than the expiry time). The grants are authlib's
(``OAuth2Session`` for client credentials and refresh tokens, ``AssertionSession`` for the RFC 7523
JWT bearer grant of Google service accounts); a rotated refresh token is written back to the
cache file before the new access token is handed out.

Blocking (HTTP): the relay calls it from a worker thread; one lock per source makes concurrent
callers share one fetch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpconn.oauth.cache import CachedLogin, read_cache, write_cache
from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind
from smtpconn.oauth.providers import Flow

# Refresh this long before the provider's expiry: a token fetched now must still be valid when
# the server checks it after connect, EHLO and STARTTLS on a slow link.
DEFAULT_MARGIN = 60.0
# A token without expires_in is taken to live this long (RFC 6749 leaves it to the provider).
_ASSUMED_LIFETIME = 300.0


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    """A Google service-account key file's parts that sign the assertion."""

    client_email: str
    private_key: str = field(repr=False)
    private_key_id: str | None = None
    token_uri: str | None = None


def parse_service_account_key(text: str, source: str) -> ServiceAccountKey:
    """The JSON key file Google hands out for a service account."""
    try:
        data = json.loads(text)
        key = ServiceAccountKey(
            client_email=str(data["client_email"]),
            private_key=str(data["private_key"]),
            private_key_id=data.get("private_key_id"),
            token_uri=data.get("token_uri"),
        )
    except (ValueError, KeyError, TypeError):
        raise OAuthFailure(
            OAuthFailureKind.BAD_KEY,
            f"{source} is not a service-account key file (JSON with client_email and private_key)",
            fix="download a JSON key for the service account in the Google Cloud console",
        ) from None
    return key


@dataclass(frozen=True, slots=True)
class TokenSourceSpec:
    """Everything one grant needs, secrets already read (never shown: ``repr=False``)."""

    flow: Flow
    token_endpoint: str
    scope: str
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    subject: str | None = None  # the mailbox (service account: the delegated user)
    service_key: ServiceAccountKey | None = None
    cache_path: Path | None = None  # refresh-token flow
    device_endpoint: str | None = None  # where `oauth login` starts
    ca_file: Path | None = None
    insecure: bool = False
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: float  # time.time() seconds
    scope: str | None = None
    lifetime: float = _ASSUMED_LIFETIME  # as the provider gave it

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def fresh_enough(self, now: float, margin: float) -> bool:
        """More than ``margin`` left, the margin shrunk to a quarter of a short lifetime (a
        token living seconds would otherwise never be reused)."""
        return self.remaining(now) > min(margin, self.lifetime / 4)


Clock = Callable[[], float]


class TokenSource:
    def __init__(self, spec: TokenSourceSpec, *, clock: Clock = time.time) -> None:
        self.spec = spec
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None

    def token(self, *, margin: float = DEFAULT_MARGIN) -> AccessToken:
        """A token valid for more than ``margin`` seconds from now (cached or new)."""
        with self._lock:
            current = self._token
            if current is not None and current.fresh_enough(self._clock(), margin):
                return current
            self._token = None
            fresh = self.fetch()
            self._token = fresh
            return fresh

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def fetch(self) -> AccessToken:
        """A new token from the provider, whatever is cached (raises :class:`OAuthFailure`)."""
        from smtpconn.oauth import grants

        started = self._clock()
        answer = grants.run_grant(self.spec)
        return _access_token(answer, started, self.spec)


def _access_token(answer: Mapping[str, Any], started: float, spec: TokenSourceSpec) -> AccessToken:
    value = answer.get("access_token")
    if not isinstance(value, str) or not value:
        raise OAuthFailure(
            OAuthFailureKind.BAD_ANSWER,
            f"the token endpoint {spec.token_endpoint} answered without an access token",
        )
    expires_in = answer.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in is not None else _ASSUMED_LIFETIME
    except (TypeError, ValueError):
        lifetime = _ASSUMED_LIFETIME
    # Counted from when we asked, not when the answer came: errs on the early side.
    scope = answer.get("scope")
    return AccessToken(
        value, started + lifetime, scope if isinstance(scope, str) else None, lifetime
    )


def rotate_if_needed(spec: TokenSourceSpec, login: CachedLogin, answer: Mapping[str, Any]) -> None:
    """Write a rotated refresh token back before its access token is used (the old one may
    already be dead at the provider)."""
    new = answer.get("refresh_token")
    if spec.cache_path is None or not isinstance(new, str) or not new:
        return
    if new != login.refresh_token:
        scope = answer.get("scope")
        write_cache(
            spec.cache_path,
            CachedLogin(new, scope if isinstance(scope, str) else login.scope, login.account),
        )


def cached_login(spec: TokenSourceSpec) -> CachedLogin:
    if spec.cache_path is None:
        raise OAuthFailure(
            OAuthFailureKind.NOT_LOGGED_IN, "the refresh-token flow needs a token cache file"
        )
    return read_cache(spec.cache_path)
