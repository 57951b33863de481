"""The library entry point of ``smtpconn verify``: pick the addresses, build the run's context
(one caching resolver for everything) and run the checks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from smtpconn.checks.dnscache import CachingResolver
from smtpconn.checks.model import CheckContext
from smtpconn.checks.report import VerifyReport
from smtpconn.checks.runner import DEFAULT_DEADLINE, Progress, Selection, run_checks
from smtpconn.errors import UsageError
from smtpconn.profile.model import Profile, SupportAddress
from smtpconn.settings import Settings


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
    from smtpconn.net import make_resolver

    if resolver is None:
        resolver = CachingResolver(make_resolver(settings.resolvers, timeout=settings.timeout))
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
