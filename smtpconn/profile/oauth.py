"""An outbound server's OAuth2 token source as the profile stores it (``[addresses.outbound.oauth]``),
its rules, and its conversion into the token library's :class:`TokenSourceSpec`.

The rules are written once (:func:`oauth_problems`) and serve both the profile reader (a finding
per key) and ``add-address`` (one usage error naming the options): a provider offers only some
grants, Microsoft needs a tenant, each grant needs its client id, secret, key or cache, and a
secret is only ever a reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from smtpconn.errors import UsageError
from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind
from smtpconn.oauth.providers import (
    FLOWS,
    Flow,
    Provider,
    default_device_endpoint,
    default_scope,
    default_token_endpoint,
    needs_tenant,
)
from smtpconn.oauth.source import TokenSource, TokenSourceSpec, parse_service_account_key
from smtpconn.profile.secrets import SecretRef, resolve_secret

# A tenant is a GUID or a domain name (contoso.onmicrosoft.com), or organizations/common.
_TENANT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?")
_CLIENT_ID = re.compile(r"[^\x00-\x20\x7f]{1,255}")


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    provider: Provider
    flow: Flow
    tenant: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = None
    key: SecretRef | None = None  # service-account JSON key file (a file: reference)
    token_cache: Path | None = None  # refresh-token flow: where the refresh token lives
    token_endpoint: str | None = None
    device_endpoint: str | None = None
    scope: str | None = None

    @property
    def effective_token_endpoint(self) -> str | None:
        return self.token_endpoint or default_token_endpoint(self.provider, self.tenant)

    @property
    def effective_device_endpoint(self) -> str | None:
        return self.device_endpoint or default_device_endpoint(self.provider, self.tenant)

    @property
    def effective_scope(self) -> str:
        return self.scope or default_scope(self.provider, self.flow)


def check_endpoint(value: str) -> str:
    """An https URL: a client secret or a refresh token goes to it."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or any(c in value for c in "\r\n\t "):
        raise ValueError(f"{value!r} is not an https:// URL")
    return value


def oauth_problems(s: OAuthSettings) -> list[tuple[str, str]]:
    """Every rule the settings break, as (field name, message)."""
    problems: list[tuple[str, str]] = []
    if s.flow not in FLOWS[s.provider]:
        offered = ", ".join(f.value for f in FLOWS[s.provider])
        problems.append(
            ("flow", f"{s.flow.value} is not offered by {s.provider.value} (use {offered})")
        )
    if s.tenant is not None and not _TENANT.fullmatch(s.tenant):
        problems.append(("tenant", f"{s.tenant!r} is not a tenant id or domain"))
    if needs_tenant(s.provider) and not s.tenant and not s.token_endpoint:
        problems.append(
            (
                "tenant",
                "is required for microsoft365 (the directory id or its .onmicrosoft.com name)",
            )
        )
    if s.provider is Provider.GENERIC and not s.token_endpoint:
        problems.append(("token_endpoint", "is required for a generic provider"))
    if s.client_id is not None and not _CLIENT_ID.fullmatch(s.client_id):
        problems.append(("client_id", "must be 1-255 characters without spaces"))
    problems.extend(_grant_problems(s))
    return problems


def _grant_problems(s: OAuthSettings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if s.flow is Flow.CLIENT_CREDENTIALS:
        if not s.client_id:
            problems.append(("client_id", "is required for client-credentials"))
        if s.client_secret is None:
            problems.append(("client_secret", "is required for client-credentials"))
    if s.flow is Flow.REFRESH_TOKEN:
        if not s.client_id:
            problems.append(("client_id", "is required for refresh-token"))
        if s.token_cache is None:
            problems.append(
                ("token_cache", "is required for refresh-token (a file smtpconn writes)")
            )
    if s.flow is Flow.SERVICE_ACCOUNT:
        if s.key is None:
            problems.append(("key", "is required for service-account (file:KEY.json)"))
        elif s.key.scheme != "file":
            problems.append(("key", "must be a file: reference to the JSON key file"))
    if s.flow is not Flow.SERVICE_ACCOUNT and s.key is not None:
        problems.append(("key", "only applies to the service-account flow"))
    if s.flow is not Flow.REFRESH_TOKEN and s.token_cache is not None:
        problems.append(("token_cache", "only applies to the refresh-token flow"))
    return problems


def oauth_to_data(s: OAuthSettings) -> dict[str, Any]:
    data: dict[str, Any] = {
        "provider": s.provider.value,
        "flow": s.flow.value,
        "tenant": s.tenant,
        "client_id": s.client_id,
        "client_secret": str(s.client_secret) if s.client_secret else None,
        "key": str(s.key) if s.key else None,
        "token_cache": str(s.token_cache) if s.token_cache else None,
        "token_endpoint": s.token_endpoint,
        "device_endpoint": s.device_endpoint,
        "scope": s.scope,
    }
    return {k: v for k, v in data.items() if v is not None}


def _cache_path(s: OAuthSettings, base_dir: Path) -> Path | None:
    if s.token_cache is None:
        return None
    path = s.token_cache.expanduser()
    return path if path.is_absolute() else base_dir / path


def token_spec(
    s: OAuthSettings,
    mailbox: str,
    base_dir: Path,
    *,
    ca_file: Path | None = None,
    insecure: bool = False,
    timeout: float = 30.0,
) -> TokenSourceSpec:
    """The library's view of these settings, secrets read now (raises ``UsageError`` when a
    reference cannot be read)."""
    endpoint = s.effective_token_endpoint
    if endpoint is None:  # the reader refuses such settings; a hand-built one may lack it
        raise UsageError("the OAuth settings name no token endpoint", input="token_endpoint")
    secret = resolve_secret(s.client_secret, base_dir) if s.client_secret else None
    key = None
    if s.key is not None:
        key = parse_service_account_key(resolve_secret(s.key, base_dir), str(s.key))
        if s.token_endpoint is None and key.token_uri:
            endpoint = key.token_uri
    return TokenSourceSpec(
        flow=s.flow,
        token_endpoint=endpoint,
        scope=s.effective_scope,
        client_id=s.client_id,
        client_secret=secret,
        subject=mailbox,
        service_key=key,
        cache_path=_cache_path(s, base_dir),
        device_endpoint=s.effective_device_endpoint,
        ca_file=ca_file,
        insecure=insecure,
        timeout=timeout,
    )


def token_source(s: OAuthSettings, mailbox: str, base_dir: Path, **options: Any) -> TokenSource:
    try:
        return TokenSource(token_spec(s, mailbox, base_dir, **options))
    except OAuthFailure as exc:
        if exc.kind is OAuthFailureKind.BAD_KEY:
            raise UsageError(exc.message, fix=exc.fix, input="key") from None
        raise
