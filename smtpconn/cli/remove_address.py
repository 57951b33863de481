"""``smtpconn remove-address``: take a support address out of the profile."""

from __future__ import annotations

from typing import Annotated

import typer

from smtpconn.cli.common import command
from smtpconn.cli.describe import describe_entry
from smtpconn.cli.render import console, escape, print_json
from smtpconn.settings import Settings


def register(app: typer.Typer) -> None:
    @command(app, "remove-address", help="Remove a support address from the connector profile.")
    def remove_address(
        address: Annotated[
            str, typer.Argument(metavar="ADDRESS", help="The support address to remove.")
        ],
        settings: Settings,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show what would be removed; write nothing.")
        ] = False,
    ) -> None:
        from smtpconn.profile.edit import plan_remove
        from smtpconn.profile.store import load_profile, locked, save_profile

        path = settings.profile_path
        with locked(path):
            loaded = load_profile(path)
            profile, removed = plan_remove(loaded.profile, address)
            if not dry_run:
                save_profile(path, profile, loaded.raw, before=loaded.profile)
        if settings.json:
            print_json(
                {
                    "action": "removed",
                    "dry_run": dry_run,
                    "profile": str(path),
                    **describe_entry(removed),
                }
            )
            return
        verb = "Would remove" if dry_run else "Removed"
        console().print(
            f"[green]✓[/] {verb} [bold]{escape(removed.address.display)}[/] from {escape(str(path))}"
        )
