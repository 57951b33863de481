"""``auth.token``: an address whose outbound server logs in with an OAuth token source gets a token
now, and the token is judged before any server sees it: unexpired, for the audience and with the
scope or role SMTP needs.

``obtain_token`` is the I/O half (one grant, in a worker thread: the token library blocks); the
token it returns is the one ``auth.login`` then logs in with, so the two checks judge the same
token. ``token_result`` is pure. No token, refresh token or client secret is ever part of a result:
only the claims :func:`smtpconn.oauth.claims.read_claims` keeps (audience, roles, scopes, tenant,
subject, expiry) are shown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.errors import SmtpconnError
from smtpconn.oauth.claims import MICROSOFT_SERVER_SIDE, missing_for_smtp, read_claims
from smtpconn.oauth.errors import OAuthFailure, OAuthFailureKind
from smtpconn.oauth.providers import Provider
from smtpconn.oauth.source import AccessToken
from smtpconn.profile.credentials import Credentials
from smtpconn.profile.model import OutboundServer
from smtpconn.smtp.vocab import AuthMechanism

CHECK_ID = "auth.token"
SEE_TOKEN = "see auth.token"
_INSPECT = "smtpconn oauth token ADDRESS shows the token's claims"


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """The token obtained for this run (``repr`` never shows it), or why there is none."""

    token: AccessToken | None = None
    failure: SmtpconnError | None = None


async def obtain_token(ctx: CheckContext, server: OutboundServer) -> TokenOutcome | None:
    """A new token from the server's token source; None when it logs in with a static secret."""
    if server.oauth is None:
        return None
    credentials = Credentials(
        ctx.base_dir, ca_file=ctx.settings.ca_file, insecure=ctx.settings.insecure
    )

    def fetch() -> AccessToken:
        source = credentials.source(server)
        assert source is not None
        return source.token()

    try:
        return TokenOutcome(token=await asyncio.to_thread(fetch))
    except SmtpconnError as exc:  # OAuthFailure, or a reference that cannot be read
        return TokenOutcome(failure=exc)


def _result(status: Status, summary: str, detail: str = "", fix: str = "") -> CheckResult:
    return CheckResult(CHECK_ID, status, summary, detail, fix)


def token_result(server: OutboundServer, outcome: TokenOutcome | None, now: float) -> CheckResult:
    """The verdict on the token (pure)."""
    if outcome is None:
        if server.auth in (AuthMechanism.XOAUTH2, AuthMechanism.OAUTHBEARER):
            return _result(
                Status.SKIP,
                f"not checked: the token is a static reference ({server.secret}), which "
                "smtpconn cannot refresh",
                fix="give the address a token source (add-address --readd with --oauth-flow) "
                "so that tokens are obtained and refreshed",
            )
        return _result(
            Status.SKIP,
            "not checked: this address logs in with a password, not an OAuth token",
            fix="nothing to do here: auth.login checks the password",
        )
    if outcome.failure is not None:
        return _failure_result(outcome.failure)
    assert outcome.token is not None and server.oauth is not None
    return _judge_token(server, outcome.token, now)


def _failure_result(failure: SmtpconnError) -> CheckResult:
    if not isinstance(failure, OAuthFailure):
        return _result(
            Status.ERROR,
            f"could not tell: a reference of the token source cannot be read: {failure.message}",
            fix=failure.fix or "make the reference readable where smtpconn runs",
        )
    if failure.kind is OAuthFailureKind.UNREACHABLE:
        return _result(
            Status.ERROR,
            "could not tell: no token could be asked for",
            failure.message,
            failure.fix or "check the network, a proxy and the token endpoint URL",
        )
    return _result(
        Status.FAIL,
        f"no token: {failure.message}",
        f"OAuth error {failure.error}" if failure.error else "",
        failure.fix or "check the token source's settings (outbound.oauth) against the provider",
    )


def _judge_token(server: OutboundServer, token: AccessToken, now: float) -> CheckResult:
    oauth = server.oauth
    assert oauth is not None
    claims = read_claims(token.value)
    shown = ", ".join(f"{k}={v}" for k, v in (claims or {}).items()) or (
        f"opaque token, scope {token.scope or 'not stated'}"
    )
    expiry = float((claims or {}).get("exp", token.expires_at))
    if min(expiry, token.expires_at) <= now:
        return _result(
            Status.FAIL,
            "the token endpoint handed out a token that has already expired",
            shown,
            "check this machine's clock (timedatectl) and the provider's token lifetime policy",
        )
    missing = missing_for_smtp(
        oauth.provider, oauth.flow, claims, token.scope, oauth.effective_scope
    )
    if missing:
        return _result(
            Status.FAIL,
            "the token lacks " + "; ".join(m.what for m in missing),
            shown,
            "; ".join(m.fix for m in missing) + f" ({_INSPECT})",
        )
    notes = f"; note: {MICROSOFT_SERVER_SIDE}" if oauth.provider is Provider.MICROSOFT365 else ""
    minutes = max(0, int((token.expires_at - now) // 60))
    return _result(
        Status.PASS,
        f"token obtained for {server.username} ({oauth.provider.value}, {oauth.flow.value}), "
        f"valid for {minutes} min, audience and scope fit for SMTP",
        shown + notes,
    )
