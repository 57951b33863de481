"""The library entry point of ``smtpconn verify``: pick the addresses, build the run's context
(one caching resolver for everything) and run the checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from smtpconn.checks.model import CheckContext
from smtpconn.checks.report import VerifyReport
from smtpconn.checks.runner import DEFAULT_DEADLINE, Progress, Selection, run_checks
from smtpconn.dns import CachingResolver
from smtpconn.errors import UsageError
from smtpconn.profile.model import Profile, SupportAddress
from smtpconn.settings import Settings

if TYPE_CHECKING:
    import dns.asyncresolver


def select_entries(profile: Profile, wanted: Sequence[str]) -> list[SupportAddress]:
    """The named addresses (in the order given), or all of the profile's."""
    from smtpconn.addresses import parse_address

    if not profile.addresses:
        raise UsageError(
            "the profile has no support addresses to verify",
            fix="add one with: smtpconn add-address ADDRESS",
        )
    if not wanted:
        return list(profile.addresses)
    entries = []
    for text in wanted:
        entry = profile.find(parse_address(text))
        if entry is None:
            known = ", ".join(e.address.display for e in profile.addresses)
            raise UsageError(f"{text} is not in the profile", fix=f"choose from: {known}")
        if entry not in entries:
            entries.append(entry)
    return entries


#: Questions in flight at once: enough to keep a run over hundreds of domains as fast as the
#: slowest address, few enough that no resolver drops the burst. 300 domains ask ~1800 questions;
#: at 64 they queued for ~1.8 s behind 50 ms round trips (benchmarks/README.md), 128 halves that,
#: and stays under dnsmasq's default of 150 concurrent forwards (more are dropped, which costs a
#: retry after a third of --timeout). 256 measured no faster through the benchmark's proxy.
MAX_DNS_IN_FLIGHT = 128


def make_resolver_for_run(settings: Settings) -> dns.asyncresolver.Resolver:
    """``--timeout`` bounds each question; within it a lost UDP packet is retried (three tries)
    rather than reported as a timeout."""
    from smtpconn.dns.resolvers import make_resolver

    resolver = make_resolver(settings.resolvers, timeout=settings.timeout)
    resolver.timeout = max(settings.timeout / 3, 0.2)
    return resolver


async def verify_entries(
    settings: Settings,
    base_dir: Path,
    entries: Sequence[SupportAddress],
    *,
    selection: Selection = Selection(),
    deadline: float = DEFAULT_DEADLINE,
    progress: Progress | None = None,
    resolver: CachingResolver | None = None,
) -> VerifyReport:
    if resolver is None:
        resolver = CachingResolver(make_resolver_for_run(settings), max_in_flight=MAX_DNS_IN_FLIGHT)
    ctx = CheckContext(settings=settings, base_dir=base_dir, resolver=resolver)
    return await run_checks(
        ctx,
        entries,
        profile=str(settings.profile_path),
        selection=selection,
        deadline=deadline,
        progress=progress,
    )


def verify_profile(
    settings: Settings,
    base_dir: Path,
    entries: Sequence[SupportAddress],
    *,
    selection: Selection = Selection(),
    deadline: float = DEFAULT_DEADLINE,
    progress: Progress | None = None,
) -> VerifyReport:
    """Synchronous wrapper for the CLI."""
    return asyncio.run(
        verify_entries(
            settings, base_dir, entries, selection=selection, deadline=deadline, progress=progress
        )
    )
