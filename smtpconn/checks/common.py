"""Helpers every check family shares: the outbound server's addresses (resolved once per run),
the "no outbound server" skip, and the result for "the resolver could not tell"."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.dns import DnsAnswer, DnsOutcome
from smtpconn.dns.sync import SyncDns
from smtpconn.profile.model import SupportAddress, Workflow

T = TypeVar("T")


@dataclass(frozen=True)
class ServerAddresses:
    host: str
    addresses: tuple[str, ...] = ()
    literal: bool = False  # the profile names an IP address, not a host name
    errors: tuple[str, ...] = field(default_factory=tuple)  # lookups that could not tell
    answers: tuple[DnsAnswer, ...] = ()


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


async def server_addresses(ctx: CheckContext, host: str) -> ServerAddresses:
    """A and AAAA of the outbound host (an IP literal is used as is); once per run."""

    async def resolve() -> ServerAddresses:
        if is_ip(host):
            ip = ipaddress.ip_address(host.strip("[]"))
            return ServerAddresses(host, (ip.compressed,), literal=True)
        # Both at once: the TLS/AUTH session waits for them, and a second question asked only
        # after the first answer would queue behind every other domain's questions.
        a, aaaa = await asyncio.gather(
            ctx.resolver.query(host, "A"), ctx.resolver.query(host, "AAAA")
        )
        return ServerAddresses(
            host,
            a.records + aaaa.records,
            errors=tuple(x.error for x in (a, aaaa) if x.outcome is DnsOutcome.ERROR),
            answers=(a, aaaa),
        )

    return await ctx.once(("server-addresses", host.lower()), resolve)


async def cname_loop(ctx: CheckContext, name: str, hops: int = 8) -> list[str]:
    """The names of a CNAME loop starting at ``name`` (first name repeated at the end), or []
    when there is none. Asked one CNAME at a time, so it works whether the resolver reports the
    loop as SERVFAIL (recursive resolvers) or answers with the looping chain (authoritative)."""
    chain = [name.lower().rstrip(".")]
    for _ in range(hops):
        answer = await ctx.resolver.query(chain[-1], "CNAME")
        if not answer.ok:
            return []
        target = answer.records[0].lower().rstrip(".")
        chain.append(target)
        if target in chain[:-1]:
            return chain[chain.index(target) :]
    return []


def no_server_reason(entry: SupportAddress) -> str | None:
    """Why server-dependent checks can't run for ``entry``, or None if they can."""
    if entry.workflow is Workflow.FORWARDING:
        return "the address is under standard forwarding: there is no outbound server to check"
    if entry.outbound is None:
        return "the profile names no outbound server for this address"
    return None


NO_SERVER_FIX = (
    "nothing to do while the address stays under forwarding; to send replies through your own "
    "server, re-add it under the authenticated workflow (smtpconn add-address --readd)"
)


def skipped(check_id: str, reason: str, fix: str) -> CheckResult:
    return CheckResult(check_id, Status.SKIP, f"skipped: {reason}", fix=fix)


def could_not_tell(check_id: str, what: str, errors: list[str] | tuple[str, ...]) -> CheckResult:
    return CheckResult(
        check_id,
        Status.ERROR,
        f"could not tell: {what}",
        detail="; ".join(dict.fromkeys(errors)),
        fix="make sure the resolver answers (--resolver HOST[:PORT]), then run verify again",
    )


async def sync_dns(ctx: CheckContext) -> SyncDns:
    """The run's one blocking bridge for pyspf/dkimpy (so the runner can close it when the run
    ends)."""

    async def make() -> SyncDns:
        return SyncDns(ctx.resolver, asyncio.get_running_loop())

    return await ctx.once(("sync-dns",), make)


def _settler(future: asyncio.Future[T]) -> Callable[[T | None, BaseException | None], None]:
    """Settles ``future`` (on its loop) with a result or an exception from another thread,
    unless its awaiting task was cancelled meanwhile."""

    def settle(value: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    return settle


async def in_own_thread(func: Callable[[], T]) -> T:
    """``func()`` in a thread of its own. ``asyncio.to_thread`` queues behind the default pool,
    which a run fills with pyspf evaluations waiting for DNS: CPU-only work queued there (a TLS
    context for the MTA-STS fetches) waited for hundreds of them (N = 300: ~0.8 s)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    settle = _settler(future)

    def run() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = func()
        except BaseException as exc:  # handed to the awaiting task, raised there
            error = exc
        # The run may have ended meanwhile (its deadline): nobody waits for the result then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="smtpconn-cpu", daemon=True).start()
    return await future


async def on_own_loop(factory: Callable[[], Coroutine[Any, Any, T]], *, linger: float = 0.0) -> T:
    """``factory()`` run on an event loop of its own, in a thread of its own; its result (or
    exception) comes back here, and cancelling the caller cancels it there. The loop then runs
    ``linger`` seconds more for closings still under way (a TLS close waits for the server's
    close_notify), without holding up the caller.

    For the TLS/AUTH session, the longest chain of dependent round trips in a run: on the run's
    loop each of its replies waited for the loop's current turn to end, and at N = 30 those
    turns process 150 family tasks and ~250 DNS answers (banner 110-190 ms for a 100 ms wait,
    STARTTLS 60-150 ms for 50). In a thread of its own, a reply that arrives is read as soon as
    the thread gets the GIL (within the switch interval). Whatever ``factory`` does must not
    touch objects bound to the caller's loop (``ctx.once``, ``ctx.resolver``, locks)."""
    caller = asyncio.get_running_loop()
    done: asyncio.Future[T] = caller.create_future()
    own = asyncio.new_event_loop()
    settle = _settler(done)

    def serve() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = own.run_until_complete(own.create_task(factory()))
        except BaseException as exc:  # handed to the awaiting task, raised there
            error = exc
        try:
            # The run may have ended meanwhile (its deadline): nobody waits for the result then.
            with contextlib.suppress(RuntimeError):
                caller.call_soon_threadsafe(settle, value, error)
            if linger > 0:
                # A cancel forwarded now (the caller's deadline) ends the linger early: nothing
                # waits for it, and it must not escape the thread as a traceback.
                with contextlib.suppress(asyncio.CancelledError):
                    own.run_until_complete(asyncio.sleep(linger))
        finally:
            own.close()

    def cancel_all() -> None:
        for task in asyncio.all_tasks(own):
            task.cancel()

    threading.Thread(target=serve, name="smtpconn-session", daemon=True).start()
    try:
        return await done
    except asyncio.CancelledError:
        with contextlib.suppress(RuntimeError):  # the loop has already finished
            own.call_soon_threadsafe(cancel_all)
        raise


def _session_context(ctx: CheckContext, *, verify_chain: bool, verify_host: bool) -> ssl.SSLContext:
    from smtpconn.net import make_client_tls_context

    # The library-default minimum is kept so an old server completes the handshake and
    # tls.version can say what it speaks; the session refuses AUTH below TLS 1.2 anyway.
    context = make_client_tls_context(ctx.settings.ca_file, insecure=ctx.settings.insecure)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    if not verify_host or not verify_chain:
        context.check_hostname = False
    if not verify_chain:
        context.verify_mode = ssl.CERT_NONE
    return context


async def session_context(
    ctx: CheckContext, *, verify_chain: bool = True, verify_host: bool = True
) -> ssl.SSLContext:
    """The TLS/AUTH sessions' client context: one per verification level and run, built in a
    thread of its own (never queued behind the run's pyspf threads): loading the system's
    trust store costs 40-80 ms of CPU, which on the event loop held up every session and
    DNS answer of the run (a context may serve any number of connections). The runner starts
    the first level's while the servers' addresses are asked."""
    key = ("tls-auth.context", verify_chain, verify_host)
    return await ctx.once(
        key,
        lambda: in_own_thread(
            lambda: _session_context(ctx, verify_chain=verify_chain, verify_host=verify_host)
        ),
    )
