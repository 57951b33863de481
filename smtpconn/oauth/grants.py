"""The four grants, each one authlib call; and every way one fails as an :class:`OAuthFailure`.

Why authlib: it is one library for every grant smtpconn needs, against any token endpoint
(client credentials, refresh token, the RFC 7523 JWT bearer assertion, and the device-code
poll, which is a token request with its own grant type). msal would cover Microsoft only and
insists on discovering its authority; google-auth covers Google only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import AssertionSession, OAuth2Session

from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind
from smtpconn.oauth.http import mount_trust
from smtpconn.oauth.providers import Flow
from smtpconn.oauth.source import TokenSourceSpec, cached_login, rotate_if_needed

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# The provider's words for "this refresh token / client / grant is no good", and what to do.
_FIXES = {
    "invalid_grant": "the login is no longer valid (revoked, expired or the password changed): "
    "run smtpconn oauth login for the address again",
    "invalid_client": "the client id or client secret is wrong or expired: "
    "create a new client secret and update the reference",
    "unauthorized_client": "the app may not use this grant: check the app registration "
    "(public client flows, domain-wide delegation)",
    "invalid_scope": "the app has not been granted the SMTP scope: grant it and give admin consent",
    "consent_required": "an administrator must consent to the app's SMTP permission",
}


def fix_for(error: str | None) -> str | None:
    return _FIXES.get(error or "")


@contextmanager
def translated(endpoint: str) -> Iterator[None]:
    """Turn transport and protocol errors into :class:`OAuthFailure` without a secret in sight."""
    try:
        yield
    except AuthlibBaseError as exc:
        error = getattr(exc, "error", None)
        description = getattr(exc, "description", None) or ""
        raise OAuthFailure(
            OAuthFailureKind.REFUSED,
            f"the token endpoint {endpoint} refused: {error}"
            + (f" ({description})" if description else ""),
            error=error,
            fix=fix_for(error),
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        kind = (
            OAuthFailureKind.UNREACHABLE
            if status == "?" or int(status) >= 500
            else (OAuthFailureKind.BAD_ANSWER)
        )
        raise OAuthFailure(kind, f"the token endpoint {endpoint} answered HTTP {status}") from None
    except requests.RequestException as exc:
        raise OAuthFailure(
            OAuthFailureKind.UNREACHABLE,
            f"the token endpoint {endpoint} cannot be reached: {type(exc).__name__}",
            fix="check the network, a proxy, and the token endpoint URL",
        ) from None
    except ValueError as exc:
        raise OAuthFailure(
            OAuthFailureKind.BAD_ANSWER,
            f"the token endpoint {endpoint} did not answer with OAuth JSON: {exc}",
        ) from None


def _session(spec: TokenSourceSpec) -> OAuth2Session:
    session = OAuth2Session(
        client_id=spec.client_id,
        client_secret=spec.client_secret,
        scope=spec.scope,
        # A public client (device-code login) has no secret: authentication is its client id.
        token_endpoint_auth_method="client_secret_post" if spec.client_secret else "none",
    )
    mount_trust(session, spec.ca_file, insecure=spec.insecure)
    return session


def _client_credentials(spec: TokenSourceSpec) -> Mapping[str, Any]:
    with _session(spec) as session:
        answer: Mapping[str, Any] = session.fetch_token(
            spec.token_endpoint, grant_type="client_credentials", timeout=spec.timeout
        )
    return answer


def _refresh_token(spec: TokenSourceSpec) -> Mapping[str, Any]:
    login = cached_login(spec)
    with _session(spec) as session:
        answer: Mapping[str, Any] = session.refresh_token(
            spec.token_endpoint,
            refresh_token=login.refresh_token,
            scope=spec.scope,
            timeout=spec.timeout,
        )
    rotate_if_needed(spec, login, answer)
    return answer


def _signing_key(pem: str) -> Any:
    """The PEM as an RSA JWK: naming the key type keeps a key of another kind from being
    used with an algorithm it was not meant for."""
    from joserfc.jwk import RSAKey

    try:
        return RSAKey.import_key(pem)
    except (ValueError, TypeError):
        raise OAuthFailure(
            OAuthFailureKind.BAD_KEY,
            "the service-account key file holds no RSA private key",
            fix="download a new JSON key for the service account",
        ) from None


def _service_account(spec: TokenSourceSpec) -> Mapping[str, Any]:
    key = spec.service_key
    if key is None:
        raise OAuthFailure(OAuthFailureKind.BAD_KEY, "the service-account flow needs a key file")
    header = {"alg": "RS256", **({"kid": key.private_key_id} if key.private_key_id else {})}
    session = AssertionSession(
        spec.token_endpoint,
        issuer=key.client_email,
        subject=spec.subject,  # domain-wide delegation: the mailbox the token acts for
        audience=spec.token_endpoint,
        claims={"scope": spec.scope},  # Google reads the scope from the assertion
        key=_signing_key(key.private_key),
        header=header,
        default_timeout=spec.timeout,
    )
    mount_trust(session, spec.ca_file, insecure=spec.insecure)
    with session:
        # authlib's name for "request a token with a fresh assertion" (RFC 7521 4.1).
        answer: Mapping[str, Any] = session.refresh_token()
    return answer


_GRANTS: dict[Flow, Callable[[TokenSourceSpec], Mapping[str, Any]]] = {
    Flow.CLIENT_CREDENTIALS: _client_credentials,
    Flow.REFRESH_TOKEN: _refresh_token,
    Flow.SERVICE_ACCOUNT: _service_account,
}


def run_grant(spec: TokenSourceSpec) -> Mapping[str, Any]:
    with translated(spec.token_endpoint):
        return _GRANTS[spec.flow](spec)
