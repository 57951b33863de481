"""``smtpconn list``: the support addresses in the profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from smtpconn.cli.common import command
from smtpconn.cli.describe import describe_entry
from smtpconn.cli.render import console, print_json
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.profile.model import SupportAddress


def register(app: typer.Typer) -> None:
    @command(app, "list", help="List the support addresses in the connector profile.")
    def list_addresses(settings: Settings) -> None:
        from smtpconn.profile.store import load_profile

        loaded = load_profile(settings.profile_path)
        entries = loaded.profile.addresses
        if settings.json:
            print_json(
                {
                    "profile": str(settings.profile_path),
                    "addresses": [describe_entry(e) for e in entries],
                }
            )
            return
        from rich.table import Table

        out = console()
        if not entries:
            out.print(
                f"No support addresses in {settings.profile_path} yet; add one with `smtpconn add-address`."
            )
            return
        table = Table(title=f"Support addresses in {settings.profile_path}", title_justify="left")
        # Addresses are never shortened: a truncated address is a wrong address.
        widest = max(len(e.address.display) for e in entries)
        table.add_column("address", no_wrap=True, min_width=widest)
        for column in ("mode", "workflow", "outbound server", "DKIM", "inbound user"):
            table.add_column(column, overflow="fold")
        for entry in entries:
            address = entry.address.display
            if address != entry.address.ascii:
                address += f"\n({entry.address.ascii})"
            o = entry.outbound
            table.add_row(
                address,
                entry.mode.value,
                entry.workflow.value,
                f"{o.host}:{o.port} {o.security.value}, auth {o.auth.value} as {o.username}"
                if o
                else "—",
                entry.dkim.selector if entry.dkim else "—",
                _inbound_user(entry),
            )
        out.print(table)


def _inbound_user(entry: SupportAddress) -> str:
    inbound = describe_entry(entry)["inbound"]
    if inbound is None:
        return "—"
    until = inbound["previous_valid_until"]
    rotating = f"\n(rotating: old password valid until {until})" if until else ""
    return f"{inbound['username']}{rotating}"
