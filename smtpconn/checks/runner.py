"""Run every check family for every support address, concurrently, within a whole-run deadline.

Family contract
---------------
A family is one coroutine function::

    async def run_family(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]

registered as one ``Family(...)`` line in ``FAMILIES`` with the check ids it may return (in
catalogue order) and ``"module:function"``. It returns one ``CheckResult`` per id it ran
(``skip`` with a reason and a fix when it could not run one), never raises for a finding, and uses
only ``ctx.resolver`` for DNS (pyspf/dkimpy through ``smtpconn.dns.sync``) and
``ctx.settings`` for timeouts, CA file and ``insecure``. Work shared between addresses or
families (one SMTP session per server, one SPF evaluation per domain) goes through
``ctx.once(key, factory)``. Blocking libraries run in threads (``asyncio.to_thread``).

The runner takes care of the rest: ``--only``/``--skip`` (by id or family prefix: ``spf``,
``tls``, ``dkim.strength``), ``needs_server`` families skipped for addresses without an outbound
server (standard forwarding), an exception in a family becoming ``error`` results for its ids
(never a traceback), and the deadline: what has not finished by then is ``error`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smtpconn.checks import catalogue as check_ids
from smtpconn.checks.common import (
    NO_SERVER_FIX,
    no_server_reason,
    server_addresses,
    session_context,
)
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.report import AddressReport, VerifyReport
from smtpconn.errors import UsageError
from smtpconn.profile.model import SupportAddress

if TYPE_CHECKING:
    import ssl

FamilyFunc = Callable[[CheckContext, SupportAddress], Awaitable[list[CheckResult]]]
Progress = Callable[[int, int], None]  # (finished, total) family runs

DEFAULT_DEADLINE = 120.0


@dataclass(frozen=True)
class Family:
    ids: tuple[str, ...]
    target: str  # "module:function"
    needs_server: bool = False  # skip for addresses without an outbound server
    opens_sessions: bool = False  # its sessions use common.session_context (built up front)
    optional: bool = False  # the module may not exist in this build

    def load(self) -> FamilyFunc | None:
        module_name, _, func = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if self.optional and exc.name == module_name:
                return None
            raise
        function: FamilyFunc = getattr(module, func)
        return function


FAMILIES: list[Family] = [
    Family(check_ids.DNS, "smtpconn.checks.dns_checks:run_dns"),
    Family(check_ids.BLOCKLIST, "smtpconn.checks.blocklist:run_blocklist", needs_server=True),
    Family(check_ids.SPF, "smtpconn.checks.spf:run_spf"),
    Family(check_ids.DKIM, "smtpconn.checks.dkim_checks:run_dkim"),
    Family(check_ids.DMARC, "smtpconn.checks.dmarc:run_dmarc"),
    Family(check_ids.MTA_STS, "smtpconn.checks.mta_sts:run_mta_sts"),
    Family(
        check_ids.TLS_AUTH,
        "smtpconn.checks.tls_auth:run_tls_auth",
        needs_server=True,
        opens_sessions=True,
    ),
]


def catalogue(families: Sequence[Family] | None = None) -> list[str]:
    return [i for f in families or FAMILIES for i in f.ids]


@dataclass(frozen=True)
class Selection:
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()

    @staticmethod
    def _matches(token: str, check_id: str) -> bool:
        return check_id == token or check_id.startswith(token + ".")

    def wants(self, check_id: str) -> bool:
        if self.only and not any(self._matches(t, check_id) for t in self.only):
            return False
        return not any(self._matches(t, check_id) for t in self.skip)

    def validate(self, known: Iterable[str]) -> None:
        ids = list(known)
        for token in (*self.only, *self.skip):
            if not any(self._matches(token, i) for i in ids):
                families = sorted({i.split(".")[0] for i in ids})
                raise UsageError(
                    f"unknown check or family {token!r}",
                    fix=f"use a check id ({', '.join(ids)}) or a family ({', '.join(families)})",
                )


def parse_selection(only: Iterable[str], skip: Iterable[str]) -> Selection:
    """Values may be repeated or comma-separated: ``--only spf,dkim --only dns.mx``."""

    def split(values: Iterable[str]) -> tuple[str, ...]:
        return tuple(t.strip().lower() for v in values for t in v.split(",") if t.strip())

    selection = Selection(split(only), split(skip))
    selection.validate(catalogue())
    return selection


def _error_results(ids: Iterable[str], summary: str, detail: str, fix: str) -> list[CheckResult]:
    return [CheckResult(i, Status.ERROR, summary, detail, fix) for i in ids]


async def _run_one(
    family: Family, func: FamilyFunc, ctx: CheckContext, entry: SupportAddress
) -> list[CheckResult]:
    if family.needs_server:
        reason = no_server_reason(entry)
        if reason:
            return [
                CheckResult(i, Status.SKIP, f"skipped: {reason}", fix=NO_SERVER_FIX)
                for i in family.ids
            ]
    try:
        return await func(ctx, entry)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug or an unexpected reply: report it, keep the other results
        return _error_results(
            family.ids,
            f"could not tell: the check stopped with {type(exc).__name__}",
            str(exc),
            "run again with -v; if it persists, report it with the detail shown",
        )


def _servers(entries: Sequence[SupportAddress]) -> list[str]:
    return sorted({e.outbound.host for e in entries if e.outbound and not no_server_reason(e)})


async def _resolve_servers_first(ctx: CheckContext, hosts: Sequence[str]) -> None:
    """The outbound servers' addresses start the longest chain of a run (the SMTP session:
    connect, EHLO, STARTTLS, AUTH, each a round trip), so they are asked before anything else.
    Asked together with every domain's first questions, they waited behind hundreds of them.
    Each question is bounded by --timeout; the checks report any failure themselves."""
    await asyncio.gather(*(server_addresses(ctx, host) for host in hosts), return_exceptions=True)


async def _build_session_context(ctx: CheckContext) -> asyncio.Task[ssl.SSLContext]:
    """The sessions' TLS context (40-80 ms of CPU, in a thread) is the other thing a session
    waits for before it connects. Started by the family itself, it began only once the family's
    module was imported (in a thread, ~50 ms) and ended 60-90 ms after the servers' addresses
    were known. A failure is reported by the family, which asks for the same context."""
    verify = not ctx.settings.insecure
    building = asyncio.ensure_future(session_context(ctx, verify_chain=verify, verify_host=verify))
    building.add_done_callback(lambda done: done.cancelled() or done.exception())
    await asyncio.sleep(0)  # under way (its thread started) before anything else is
    return building


_Tasks = dict[asyncio.Task[list[CheckResult]], tuple[int, Family]]


async def _load(families: Sequence[Family]) -> list[tuple[Family, FamilyFunc]]:
    """The families' functions, their modules imported off the event loop (dkimpy, pyspf and
    cryptography take tens of ms: the round trips already under way go on meanwhile)."""
    if not families:
        return []
    loaded = await asyncio.to_thread(lambda: [(f, f.load()) for f in families])
    return [(f, fn) for f, fn in loaded if fn is not None]


async def run_checks(
    ctx: CheckContext,
    entries: Sequence[SupportAddress],
    *,
    profile: str,
    selection: Selection = Selection(),
    deadline: float = DEFAULT_DEADLINE,
    progress: Progress | None = None,
    families: Sequence[Family] | None = None,
) -> VerifyReport:
    """Every selected check for every entry, all at once; results in catalogue order."""
    from smtpconn.checks.common import sync_dns

    families = list(families if families is not None else FAMILIES)
    selected = [f for f in families if any(selection.wants(i) for i in f.ids)]
    started = time.monotonic()
    tasks: _Tasks = {}

    async def start(runnable: list[tuple[Family, FamilyFunc]]) -> None:
        for index, entry in enumerate(entries):
            for family, func in runnable:
                task = asyncio.create_task(_run_one(family, func, ctx, entry))
                tasks[task] = (index, family)
            # One address's tasks per loop turn: all at once, their first steps made one turn
            # of ~0.1 s at N = 30, during which a session's reply waited unread.
            await asyncio.sleep(0)

    # The server families' sessions are the longest chain of a run: their servers' addresses
    # are asked before any family module is imported, and their tasks are created (so their
    # sessions open) before the other families' modules are imported and their first wave of
    # DNS questions goes out. Imports run in a thread, so the event loop keeps answering meanwhile.
    server_families = [f for f in selected if f.needs_server]
    hosts = _servers(entries)
    building = []  # referenced here until the run ends (the loop keeps only weak references)
    if hosts and any(f.opens_sessions for f in server_families):
        building.append(await _build_session_context(ctx))
    if server_families:
        resolving = asyncio.create_task(_resolve_servers_first(ctx, hosts))
        await start(await _load(server_families))
        # Within the deadline: a resolver that never answers must not hold the run for
        # --timeout (the families then report the deadline themselves).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(resolving, max(deadline - (time.monotonic() - started), 0.001))
    await start(await _load([f for f in selected if not f.needs_server]))
    _report_progress(tasks, progress)
    remaining = max(deadline - (time.monotonic() - started), 0.001)
    done = await _wait_until(tasks, remaining)
    bridge = await sync_dns(ctx)
    bridge.close()

    per_entry: list[list[CheckResult]] = [[] for _ in entries]
    order = {i: n for n, i in enumerate(catalogue(families))}
    for task, (index, family) in tasks.items():
        if task in done and not task.cancelled():
            results = task.result()
        else:
            results = _error_results(
                family.ids,
                f"could not tell: the run's deadline ({deadline:g} s) passed before this check finished",
                f"stopped after {time.monotonic() - started:.1f} s",
                "give the run more time (--deadline SECONDS) or check that the resolver and "
                "servers answer",
            )
        per_entry[index].extend(r for r in results if selection.wants(r.id))
    addresses = [
        AddressReport(
            entry.address.display, sorted(results, key=lambda r: order.get(r.id, len(order)))
        )
        for entry, results in zip(entries, per_entry, strict=True)
    ]
    return VerifyReport(profile, addresses, insecure=ctx.settings.insecure)


def _report_progress(tasks: _Tasks, progress: Progress | None) -> None:
    """Call ``progress(finished, total)`` now and each time a task ends."""
    if not progress:
        return
    total = len(tasks)
    finished = 0
    progress(0, total)

    def count(_: asyncio.Task[list[CheckResult]]) -> None:
        nonlocal finished
        finished += 1
        progress(finished, total)

    for task in tasks:
        task.add_done_callback(count)


async def _wait_until(tasks: _Tasks, timeout: float) -> set[asyncio.Task[list[CheckResult]]]:
    """The tasks done within ``timeout``; the others are cancelled (and awaited)."""
    if not tasks:
        return set()
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return done
