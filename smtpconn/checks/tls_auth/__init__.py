"""``verify``'s TLS and AUTH family: what the customer's outbound server does on the wire.

``probe`` talks to the server (I/O) and records what it found; ``judge`` turns that into one
result per check id (pure); ``advice`` holds the fix texts. ``run_tls_auth`` is the family's
entry point (``checks.runner.FAMILIES``).
"""

from __future__ import annotations

import asyncio
import time

from smtpconn.checks.common import no_server_reason, server_addresses, session_context
from smtpconn.checks.model import CheckContext, CheckResult
from smtpconn.checks.tls_auth.judge import CHECK_IDS, judge_unresolved, skip_all
from smtpconn.checks.tls_auth.pool import check_addresses
from smtpconn.checks.tls_auth.token import CHECK_ID as TOKEN_ID
from smtpconn.checks.tls_auth.token import obtain_token, token_result
from smtpconn.profile.model import OutboundServer, SupportAddress

__all__ = ["CHECK_IDS", "IDS", "run_tls_auth"]

IDS = CHECK_IDS


async def run_tls_auth(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    reason = no_server_reason(entry)
    if reason is not None or entry.outbound is None:
        return skip_all(reason or "no outbound server")
    server = entry.outbound
    # One session per server and credentials, shared by every address that uses them.
    key = (
        "tls-auth",
        server.host.lower(),
        server.port,
        server.security.value,
        server.auth.value,
        server.username,
        str(server.secret),
        repr(server.oauth),
    )
    return await ctx.once(key, lambda: _check_server(ctx, server))


async def _check_server(ctx: CheckContext, server: OutboundServer) -> list[CheckResult]:
    # The token first: auth.token is judged even when the server cannot be reached, and
    # auth.login logs in with this very token. The first session's context is being built (in
    # a thread, started by the runner) while the address questions are out; a failure to build
    # it is reported where the session asks for it, as before.
    verify = not ctx.settings.insecure
    token, found, _ = await asyncio.gather(
        obtain_token(ctx, server),
        server_addresses(ctx, server.host),
        session_context(ctx, verify_chain=verify, verify_host=verify),
        return_exceptions=True,
    )
    if isinstance(token, BaseException):
        raise token
    if isinstance(found, BaseException):
        raise found
    if not found.addresses:
        results = judge_unresolved(server.host, found.errors)
    else:
        # Each address of a pool gets its own session: one bad node is a share of the mail
        # lost.
        results = await check_addresses(ctx, server, found.addresses, token)
    verdict = token_result(server, token, time.time())
    return [verdict if r.id == TOKEN_ID else r for r in results]
