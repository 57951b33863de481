"""Every address of the outbound server: one verdict from the judged sessions of each.

A host name with several A/AAAA records is a pool: senders pick any address, so one node with an
expired certificate or a refused login fails a share of the mail while every other node looks
fine. Each address gets its own session (``probe_server`` with that address alone); when every
address reached the same verdicts, those are the results; when they differ, each check takes its
worst address's result, naming the address and listing the others' verdicts.

An address that cannot be reached from here because this machine has no route to its network
(typically IPv6 without IPv6 connectivity) says nothing about the node: it is noted in the
details, not judged, while another address answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.tls_auth.judge import judge
from smtpconn.checks.tls_auth.probe import Probe, probe_server
from smtpconn.checks.tls_auth.token import TokenOutcome
from smtpconn.profile.model import OutboundServer
from smtpconn.smtp.failures import FailureKind

#: How bad a status is when addresses disagree (a skip hides a verdict: worse than a pass).
RANK = {Status.PASS: 0, Status.SKIP: 1, Status.WARN: 2, Status.ERROR: 3, Status.FAIL: 4}


def unreachable_here(failure_kind: FailureKind | None) -> bool:
    return failure_kind is FailureKind.UNREACHABLE


def merge(
    judged: Sequence[tuple[str, list[CheckResult]]], unreachable: Sequence[str] = ()
) -> list[CheckResult]:
    """One list of results (the ids of the first) from ``(address, results)`` per address."""
    first = judged[0][1]
    note = f"not judged (no route from here): {', '.join(unreachable)}" if unreachable else ""
    if len(judged) == 1 or all(_statuses(r) == _statuses(first) for _, r in judged[1:]):
        agreed = f"same on all {len(judged)} addresses" if len(judged) > 1 else ""
        extra = "; ".join(x for x in (agreed, note) if x)
        return [_with_detail(r, extra) for r in first] if extra else list(first)
    merged = []
    for index, check in enumerate(first):
        per_address = [(address, results[index]) for address, results in judged]
        merged.append(_worst(check.id, per_address, note))
    return merged


def _statuses(results: list[CheckResult]) -> list[tuple[str, Status]]:
    return [(r.id, r.status) for r in results]


def _worst(check_id: str, per_address: list[tuple[str, CheckResult]], note: str) -> CheckResult:
    address, worst = max(per_address, key=lambda pair: RANK[pair[1].status])
    statuses = {r.status for _, r in per_address}
    if len(statuses) == 1:
        return _with_detail(worst, note)
    verdicts = ", ".join(f"{a} {r.status.value}" for a, r in per_address)
    detail = "\n".join(
        x for x in (f"the server's addresses differ: {verdicts}", worst.detail, note) if x
    )
    fix = worst.fix
    if worst.status is not Status.PASS:
        fix = f"on the node at {address} (the others differ): {worst.fix}"
    return replace(
        worst,
        summary=f"{address}: {worst.summary} (the server's addresses differ: {verdicts})",
        detail=detail,
        fix=fix,
    )


def _with_detail(result: CheckResult, extra: str) -> CheckResult:
    if not extra:
        return result
    return replace(result, detail="\n".join(x for x in (result.detail, extra) if x))


async def check_addresses(
    ctx: CheckContext,
    server: OutboundServer,
    addresses: Sequence[str],
    token: TokenOutcome | None = None,
) -> list[CheckResult]:
    """One session per address, at once (each address has its own lock), judged and merged.
    ``token``: what the OAuth token source gave, which every node's login uses."""
    if len(addresses) == 1:
        probe = await probe_server(ctx, server, addresses, token)
        return judge(probe, insecure=ctx.settings.insecure)
    probes = await asyncio.gather(*(probe_server(ctx, server, [a], token) for a in addresses))

    def no_route(probe: Probe) -> bool:
        failure = probe.connect_failure
        return failure is not None and unreachable_here(failure.kind)

    judged_probes = [p for p in probes if not no_route(p)] or probes
    unreachable = [p.address or "" for p in probes if p not in judged_probes]
    judged = [(p.address or "", judge(p, insecure=ctx.settings.insecure)) for p in judged_probes]
    return merge(judged, unreachable)
