"""``smtpconn list``: the support addresses in the profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from smtpconn.cli.common import command
from smtpconn.cli.describe import describe_entry
from smtpconn.cli.render import console, print_json
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

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
        out = console()
        if not entries:
            out.print(
                f"No support addresses in {settings.profile_path} yet; add one with `smtpconn add-address`."
            )
            return
        if len(entries) > _RICH_TABLE_ROWS:
            _print_plain(out, settings, entries)
            return
        from rich.table import Table

        table = Table(title=f"Support addresses in {settings.profile_path}", title_justify="left")
        # Addresses are never shortened: a truncated address is a wrong address.
        widest = max(len(e.address.display) for e in entries)
        table.add_column("address", no_wrap=True, min_width=widest)
        columns = _columns(entries)
        for column in columns[1:]:
            table.add_column(column, overflow="fold")
        for entry in entries:
            address = entry.address.display
            if address != entry.address.ascii:
                address += f"\n({entry.address.ascii})"
            table.add_row(address, *_cells(entry)[1 : len(columns)])
        out.print(table)


# rich lays a table out cell by cell, about a third of a millisecond per row: past this many
# rows a plain column layout (one line per address) keeps `list` fast at thousands of them.
_RICH_TABLE_ROWS = 200
_COLUMNS = (
    "address",
    "mode",
    "workflow",
    "outbound server",
    "DKIM",
    "inbound user",
    "policy",  # unauthenticated_policy
)


def _columns(entries: tuple[SupportAddress, ...]) -> tuple[str, ...]:
    """The policy column only when some address departs from the default (tag, no ARC sealers),
    so the usual listing keeps its width."""
    from smtpconn.profile.model import UnauthenticatedPolicy

    if any(_policy(e) != UnauthenticatedPolicy.TAG.value for e in entries):
        return _COLUMNS
    return _COLUMNS[:-1]


def _cells(entry: SupportAddress) -> tuple[str, ...]:
    o = entry.outbound
    address = entry.address.display
    if address != entry.address.ascii:
        address += f" ({entry.address.ascii})"
    return (
        address,
        entry.mode.value,
        entry.workflow.value,
        f"{o.host}:{o.port} {o.security.value}, auth {o.auth.value} as {o.username}" if o else "—",
        entry.dkim.selector if entry.dkim else "—",
        _inbound_user(entry),
        _policy(entry),
    )


def _policy(entry: SupportAddress) -> str:
    """The unauthenticated-mail policy, with the ARC sealers it believes."""
    sealers = entry.trusted_arc_sealers
    arc = f" (ARC: {', '.join(sealers)})" if sealers else ""
    return entry.unauthenticated_policy.value + arc


def _print_plain(out: Console, settings: Settings, entries: tuple[SupportAddress, ...]) -> None:
    columns = _columns(entries)
    rows = [columns, *(_cells(e)[: len(columns)] for e in entries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"Support addresses in {settings.profile_path} ({len(entries)})"
    # Addresses are never shortened or wrapped: a truncated address is a wrong address.
    out.print("\n".join([title, *lines]), markup=False, highlight=False, soft_wrap=True)


def _inbound_user(entry: SupportAddress) -> str:
    inbound = describe_entry(entry)["inbound"]
    if inbound is None:
        return "—"
    until = inbound["previous_valid_until"]
    rotating = f" (rotating: old password valid until {until})" if until else ""
    return f"{inbound['username']}{rotating}"
