"""What smtpconn knows of each OAuth provider: endpoints, scopes, SMTP servers, MX names (pure)."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    MICROSOFT365 = "microsoft365"
    GOOGLE = "google"
    GENERIC = "generic"  # any other provider: the token endpoint is given


class Flow(StrEnum):
    """How a token is obtained. A refresh token is first obtained by a device-code login."""

    CLIENT_CREDENTIALS = "client-credentials"  # Microsoft app-only (SMTP.SendAsApp)
    REFRESH_TOKEN = "refresh-token"  # user-delegated, Microsoft or Google
    SERVICE_ACCOUNT = "service-account"  # Google domain-wide delegation (RFC 7523 JWT bearer)


# Which grants each provider offers for SMTP: Google has no app-only SMTP, Microsoft no JWT
# bearer grant for a mailbox.
FLOWS: dict[Provider, tuple[Flow, ...]] = {
    Provider.MICROSOFT365: (Flow.CLIENT_CREDENTIALS, Flow.REFRESH_TOKEN),
    Provider.GOOGLE: (Flow.REFRESH_TOKEN, Flow.SERVICE_ACCOUNT),
    Provider.GENERIC: tuple(Flow),
}

_MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
_GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
_GOOGLE_DEVICE = "https://oauth2.googleapis.com/device/code"

# The audience Exchange Online checks; ".default" asks for the app roles granted (SMTP.SendAsApp).
_MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
_MICROSOFT_USER_SCOPE = "https://outlook.office365.com/SMTP.Send offline_access"
_GOOGLE_SCOPE = "https://mail.google.com/"

SMTP_SERVERS: dict[Provider, tuple[str, int]] = {
    Provider.MICROSOFT365: ("smtp.office365.com", 587),
    Provider.GOOGLE: ("smtp.gmail.com", 587),
}


# Published sending limits of each provider's submission service, as profile limit keys
# (``[addresses.outbound.limits]``); add-address writes them when the provider is chosen or
# detected, and explicit options win. Microsoft 365 (Exchange Online limits, SMTP AUTH client
# submission): 3 concurrent connections per mailbox, 30 messages a minute, 10,000 recipients a
# day. Google Workspace: 100 recipients per SMTP transaction, 10,000 recipients a day per user.
SENDING_LIMITS: dict[Provider, dict[str, int]] = {
    Provider.MICROSOFT365: {
        "max_connections": 3,
        "messages_per_minute": 30,
        "recipients_per_day": 10_000,
    },
    Provider.GOOGLE: {"recipients_per_message": 100, "recipients_per_day": 10_000},
}


def needs_tenant(provider: Provider) -> bool:
    return provider is Provider.MICROSOFT365


def default_token_endpoint(provider: Provider, tenant: str | None) -> str | None:
    if provider is Provider.MICROSOFT365 and tenant:
        return f"{_MICROSOFT_AUTHORITY}/{tenant}/oauth2/v2.0/token"
    if provider is Provider.GOOGLE:
        return _GOOGLE_TOKEN
    return None


def default_device_endpoint(provider: Provider, tenant: str | None) -> str | None:
    if provider is Provider.MICROSOFT365 and tenant:
        return f"{_MICROSOFT_AUTHORITY}/{tenant}/oauth2/v2.0/devicecode"
    if provider is Provider.GOOGLE:
        return _GOOGLE_DEVICE
    return None


def default_scope(provider: Provider, flow: Flow) -> str:
    if provider is Provider.MICROSOFT365:
        return _MICROSOFT_APP_SCOPE if flow is Flow.CLIENT_CREDENTIALS else _MICROSOFT_USER_SCOPE
    if provider is Provider.GOOGLE:
        return _GOOGLE_SCOPE
    # A generic provider's SMTP scope is its own business; offline_access is what keeps a
    # refresh token coming back under OpenID Connect.
    return "smtp offline_access" if flow is Flow.REFRESH_TOKEN else "smtp"


def provider_for_mx(hosts: list[str]) -> Provider | None:
    """The provider whose inbound servers the domain's MX names, if any (Exchange Online
    protection, Google's aspmx and googlemail hosts)."""
    for host in hosts:
        name = host.lower().rstrip(".")
        if name.endswith(".mail.protection.outlook.com"):
            return Provider.MICROSOFT365
        if name == "aspmx.l.google.com" or name.endswith(
            (".aspmx.l.google.com", ".googlemail.com")
        ):
            return Provider.GOOGLE
    return None


def provider_for_server(host: str) -> Provider | None:
    """The provider a submission host belongs to, when it is one of the well-known ones."""
    name = host.lower().rstrip(".")
    for provider, (smtp_host, _port) in SMTP_SERVERS.items():
        if name == smtp_host:
            return provider
    return None
