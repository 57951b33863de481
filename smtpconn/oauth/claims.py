"""What an access token says about itself, and what it lacks for SMTP (pure).

Microsoft's tokens are JWTs whose claims (aud, roles, scp, tid) tell whether the app registration,
admin consent and role assignment are right; Google's are opaque, and only the scope the token
endpoint granted is known. The claims are read, never verified: the server that receives the
token verifies it; here they only explain a refusal before one happens.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from smtpconn.oauth.providers import Flow, Provider

MICROSOFT_AUDIENCES = ("https://outlook.office365.com", "00000002-0000-0ff1-ce00-000000000000")
SHOWN = ("aud", "iss", "tid", "sub", "oid", "appid", "azp", "upn", "roles", "scp", "exp", "iat")


@dataclass(frozen=True, slots=True)
class Missing:
    what: str
    fix: str


def read_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (no secret in it: the signature is dropped), None when opaque."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    return {k: payload[k] for k in SHOWN if k in payload}


def _words(value: Any) -> set[str]:
    if isinstance(value, list):
        return {str(v) for v in value}
    return set(str(value or "").split())


def missing_for_smtp(
    provider: Provider, flow: Flow, claims: dict[str, Any] | None, granted_scope: str | None,
    wanted_scope: str,
) -> list[Missing]:  # fmt: skip
    """Each step still to take, with its fix; empty when the token looks right for SMTP."""
    if provider is Provider.MICROSOFT365:
        return _microsoft(flow, claims)
    if provider is Provider.GOOGLE:
        granted = _words(granted_scope) | _words((claims or {}).get("scope"))
        if "https://mail.google.com/" not in granted:
            return [
                Missing(
                    "the scope https://mail.google.com/",
                    "grant it to the OAuth client (consent screen), or for a service account "
                    "add it to the domain-wide delegation in the Admin console",
                )
            ]
        return []
    granted = _words(granted_scope) | _words((claims or {}).get("scp"))
    granted |= _words((claims or {}).get("roles"))
    absent = sorted(_words(wanted_scope) - granted - {"offline_access"})
    if absent and granted:
        return [Missing(f"the scope {' '.join(absent)}", "grant the scope to the client")]
    return []


def _microsoft(flow: Flow, claims: dict[str, Any] | None) -> list[Missing]:
    if claims is None:
        return [Missing("a readable token", "Microsoft issues JWTs: check the token endpoint")]
    out: list[Missing] = []
    if claims.get("aud") not in MICROSOFT_AUDIENCES:
        out.append(
            Missing(
                f"the Exchange Online audience (the token is for {claims.get('aud')})",
                "request the scope https://outlook.office365.com/.default "
                "(app-only) or https://outlook.office365.com/SMTP.Send (delegated)",
            )
        )
    if flow is Flow.CLIENT_CREDENTIALS and "SMTP.SendAsApp" not in _words(claims.get("roles")):
        out.append(
            Missing(
                "the SMTP.SendAsApp application role",
                "in Entra ID > App registrations > API permissions add Office 365 Exchange "
                "Online > Application > SMTP.SendAsApp and grant admin consent; then in "
                "Exchange Online PowerShell run New-ServicePrincipal -AppId <client id> "
                "-ObjectId <enterprise app object id> and Add-MailboxPermission -Identity "
                "<mailbox> -User <service principal id> -AccessRights FullAccess",
            )
        )
    if flow is Flow.REFRESH_TOKEN and "SMTP.Send" not in _words(claims.get("scp")):
        out.append(
            Missing(
                "the delegated SMTP.Send permission",
                "add Office 365 Exchange Online > Delegated > SMTP.Send to the app registration "
                "and consent to it, then run smtpconn oauth login again",
            )
        )
    return out


# What the server may still refuse although the token is right; shown with every Microsoft token.
MICROSOFT_SERVER_SIDE = (
    "SMTP AUTH must be enabled for the mailbox: Set-CASMailbox -Identity <mailbox> "
    "-SmtpClientAuthenticationDisabled $false (and Security Defaults must not block it)"
)
