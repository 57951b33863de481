"""The device-code login (RFC 8628) that gives the refresh-token flow its first refresh token.

``start`` asks for a user code; the caller shows the URL and the code; ``wait`` polls the token
endpoint at the interval the provider asked for (slower when told ``slow_down``) until the user
approves, declines or the code expires, and stores the refresh token in the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authlib.common.errors import AuthlibBaseError

from smtpconn.errors import SmtpconnFailure
from smtpconn.oauth.cache import CachedLogin, write_cache
from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind
from smtpconn.oauth.grants import DEVICE_CODE_GRANT, _session, translated
from smtpconn.oauth.source import TokenSourceSpec

_SLOW_DOWN_STEP = 5.0  # RFC 8628 3.5: add 5 seconds to the interval on slow_down


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    user_code: str
    verification_uri: str
    expires_at: float
    interval: float
    device_code: str = field(repr=False)
    verification_uri_complete: str | None = None


def _text(answer: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = answer.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def start(spec: TokenSourceSpec, *, clock: Callable[[], float] = time.time) -> DeviceLogin:
    endpoint = spec.device_endpoint
    if endpoint is None:
        raise OAuthFailure(
            OAuthFailureKind.BAD_ANSWER, "no device-code endpoint is known for this provider"
        )
    with translated(endpoint), _session(spec) as session:
        response = session.post(
            endpoint,
            data={"client_id": spec.client_id or "", "scope": spec.scope},
            timeout=spec.timeout,
            withhold_token=True,
        )
        answer = response.json()
    if not isinstance(answer, dict):
        raise OAuthFailure(OAuthFailureKind.BAD_ANSWER, f"{endpoint} did not answer with JSON")
    if "error" in answer:
        raise OAuthFailure(
            OAuthFailureKind.REFUSED,
            f"the device-code endpoint {endpoint} refused: {answer['error']}",
            error=str(answer["error"]),
        )
    device_code = _text(answer, "device_code")
    user_code = _text(answer, "user_code")
    # Microsoft says verification_uri; Google said verification_url for years.
    uri = _text(answer, "verification_uri", "verification_url")
    if device_code is None or user_code is None or uri is None:
        raise OAuthFailure(OAuthFailureKind.BAD_ANSWER, f"{endpoint} answered without a user code")
    return DeviceLogin(
        user_code=user_code,
        verification_uri=uri,
        expires_at=clock() + float(answer.get("expires_in", 900)),
        interval=float(answer.get("interval", 5)),
        device_code=device_code,
        verification_uri_complete=_text(answer, "verification_uri_complete"),
    )


def wait(
    spec: TokenSourceSpec,
    login: DeviceLogin,
    *,
    account: str | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Mapping[str, Any]:
    """Poll until approved; store the refresh token; return the token answer."""
    interval = login.interval
    while clock() < login.expires_at:
        sleep(interval)
        try:
            answer = _poll(spec, login)
        except _Pending as pending:
            if pending.slow_down:
                interval += _SLOW_DOWN_STEP
            continue
        _store(spec, answer, account)
        return answer
    raise OAuthFailure(
        OAuthFailureKind.REFUSED,
        "the device code expired before the login was approved",
        error="expired_token",
        fix="run smtpconn oauth login again and approve within the time shown",
    )


class _Pending(SmtpconnFailure):
    """The user has not approved yet (never leaves :func:`wait`)."""

    def __init__(self, slow_down: bool) -> None:
        super().__init__("pending")
        self.slow_down = slow_down


def _poll(spec: TokenSourceSpec, login: DeviceLogin) -> Mapping[str, Any]:
    with translated(spec.token_endpoint), _session(spec) as session:
        try:
            answer: Mapping[str, Any] = session.fetch_token(
                spec.token_endpoint,
                grant_type=DEVICE_CODE_GRANT,
                device_code=login.device_code,
                timeout=spec.timeout,
            )
        except AuthlibBaseError as exc:
            # Not yet approved: RFC 8628 3.5 says keep polling (slower after slow_down).
            error = getattr(exc, "error", None)
            if error in ("authorization_pending", "slow_down"):
                raise _Pending(error == "slow_down") from None
            raise
    return answer


def _store(spec: TokenSourceSpec, answer: Mapping[str, Any], account: str | None) -> None:
    refresh = answer.get("refresh_token")
    if not isinstance(refresh, str) or not refresh or spec.cache_path is None:
        raise OAuthFailure(
            OAuthFailureKind.BAD_ANSWER,
            "the login was approved but the provider sent no refresh token",
            fix="ask for offline access (the scope offline_access for Microsoft)",
        )
    scope = answer.get("scope")
    write_cache(
        spec.cache_path,
        CachedLogin(refresh, scope if isinstance(scope, str) else spec.scope, account),
    )
