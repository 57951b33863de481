"""``smtpconn remove-address``: take a support address out of the profile (refused while the
spool holds mail for it, unless --drain waits for that mail or --force leaves it)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import command
from smtpconn.cli.describe import describe_entry
from smtpconn.cli.render import console, error_console, escape, print_json
from smtpconn.errors import UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.profile.model import SupportAddress
    from smtpconn.profile.store import LoadedProfile
    from smtpconn.relay.queue import QueueItem

HELP = """Remove a support address from the connector profile.

Refused while the relay's spool holds messages for it (queued, deferred or held): the message
says how many and how to retry or delete them. --drain waits until they are delivered (with a
progress bar; held messages never leave by themselves, so it stops and says so); --force
removes the address anyway and lists what was left in the spool. Reload a running relay after.
"""

POLL = 0.5


def register(app: typer.Typer) -> None:
    @command(app, "remove-address", help=HELP)
    def remove_address(
        address: Annotated[
            str, typer.Argument(metavar="ADDRESS", help="The support address to remove.")
        ],
        settings: Settings,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show what would be removed; write nothing.")
        ] = False,
        drain: Annotated[
            bool, typer.Option("--drain", help="Wait until its queued mail is delivered.")
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="Remove it even with mail left in the spool.")
        ] = False,
    ) -> None:
        from smtpconn.profile.edit import plan_remove
        from smtpconn.profile.store import load_profile, locked, save_profile

        if drain and force:
            raise UsageError("--drain and --force exclude each other", fix="choose one")
        path = settings.profile_path
        if drain and not dry_run:
            # Wait outside the lock (it can take minutes); the profile is read again under it.
            loaded = load_profile(path)
            _, entry = plan_remove(loaded.profile, address)
            _drain(settings, _spool_dir(settings, loaded), entry)
        with locked(path):
            loaded = load_profile(path)
            profile, removed = plan_remove(loaded.profile, address)
            spool_dir = _spool_dir(settings, loaded)
            left = _waiting(spool_dir, removed)
            if left and not force and not dry_run:
                raise _refusal(removed, left)
            if not dry_run:
                save_profile(path, profile, loaded.raw, before=loaded.profile)
        _report(settings, removed, left, dry_run=dry_run)


def _spool_dir(settings: Settings, loaded: LoadedProfile) -> Path:
    from smtpconn.relay.config import RelayOverrides, build_config

    return build_config(loaded.profile, loaded.base_dir, settings, RelayOverrides()).spool_dir


def _waiting(spool_dir: Path, entry: SupportAddress) -> list[QueueItem]:
    from smtpconn.relay.drain import waiting_for

    return waiting_for(spool_dir, entry.address.ascii)


def _counts(left: list[QueueItem]) -> str:
    held = sum(1 for item in left if item.state.held)
    return f"{len(left)} message(s) ({held} held)"


def _refusal(entry: SupportAddress, left: list[QueueItem]) -> UsageError:
    ids = " ".join(item.short_id for item in left[:10]) + (" …" if len(left) > 10 else "")
    return UsageError(
        f"{entry.address.display} still has {_counts(left)} in the spool; nothing was changed",
        fix=(
            f"deliver them (smtpconn queue retry {ids}), delete them (smtpconn queue delete "
            f"{ids}), wait for them with --drain, or remove anyway with --force"
        ),
    )


def _drain(settings: Settings, spool_dir: Path, entry: SupportAddress) -> None:
    """Wait until no message for ``entry`` is queued; stop (exit 2) when only held ones remain."""
    from rich.progress import Progress

    left = _waiting(spool_dir, entry)
    total = len(left)
    with Progress(console=error_console(), transient=True, disable=settings.json) as progress:
        task = progress.add_task(f"draining {entry.address.display}", total=total or 1)
        while left:
            if all(item.state.held for item in left):
                raise UsageError(
                    f"{entry.address.display}: only held messages are left ({len(left)}), "
                    "which the relay does not retry by itself; nothing was changed",
                    fix="release them with smtpconn queue retry ID, delete them with smtpconn "
                    "queue delete ID, or remove anyway with --force",
                )
            total = max(total, len(left))
            progress.update(task, total=total, completed=total - len(left))
            time.sleep(POLL)
            left = _waiting(spool_dir, entry)
        progress.update(task, total=total or 1, completed=total or 1)


def _report(
    settings: Settings, removed: SupportAddress, left: list[QueueItem], *, dry_run: bool
) -> None:
    path = settings.profile_path
    if settings.json:
        document: dict[str, Any] = {
            "action": "removed",
            "dry_run": dry_run,
            "profile": str(path),
            **describe_entry(removed),
            "left_in_spool": [item.entry.id for item in left],
        }
        print_json(document)
        return
    out = console()
    verb = "Would remove" if dry_run else "Removed"
    out.print(
        f"[green]✓[/] {verb} [bold]{escape(removed.address.display)}[/] from {escape(str(path))}"
    )
    if left:
        ids = ", ".join(item.short_id for item in left)
        out.print(
            f"[yellow]  {_counts(left)} for it {'are' if dry_run else 'were left'} in the "
            f"spool: {escape(ids)} (smtpconn queue list shows them).[/]"
        )
