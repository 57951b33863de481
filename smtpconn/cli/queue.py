"""``smtpconn queue list|retry|delete``: inspect and act on the relay's spool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smtpconn.cli.common import command
from smtpconn.settings import Settings

SpoolOption = Annotated[
    str | None, typer.Option("--spool", help="Spool folder. [default: relay.spool of the profile]")
]
IdsArgument = Annotated[list[str] | None, typer.Argument(help="Message ids (see queue list).")]
AllOption = Annotated[bool, typer.Option("--all", help="Every message in the spool.")]


def _spool_dir(settings: Settings, spool: str | None) -> Path:
    from smtpconn.profile.store import load_profile
    from smtpconn.relay.config import RelayOverrides, build_config

    if spool is not None:
        return Path(spool)
    loaded = load_profile(settings.profile_path)
    return build_config(loaded.profile, loaded.base_dir, settings, RelayOverrides()).spool_dir


def register(app: typer.Typer) -> None:
    queue_app = typer.Typer(
        help="Inspect the relay's spool: list messages waiting, retry them now, delete them.",
        no_args_is_help=True,
    )
    app.add_typer(queue_app, name="queue")

    @command(queue_app, "list", help="List queued, deferred and held messages.")
    def queue_list(
        settings: Settings,
        spool: SpoolOption = None,
        direction: Annotated[
            str | None, typer.Option(help="inbound | outbound. [default: both]")
        ] = None,
    ) -> None:
        import datetime as dt

        from smtpconn.cli.render import console, escape, print_json
        from smtpconn.errors import UsageError
        from smtpconn.relay.queue import list_queue, open_spool

        if direction not in (None, "inbound", "outbound"):
            raise UsageError(f"--direction {direction!r} is not inbound or outbound")
        items = list_queue(open_spool(_spool_dir(settings, spool)), direction)
        if settings.json:
            print_json({"messages": [i.to_json() for i in items]})
            return
        out = console()
        if not items:
            out.print("The spool is empty: everything was delivered.")
            return
        from rich.table import Table

        table = Table(title_justify="left")
        for column in ("id", "dir", "from", "to", "size", "status", "attempts", "next", "error"):
            table.add_column(column)
        for item in items:
            data = item.to_json()
            nxt = data["next_attempt"]
            table.add_row(
                data["id"],
                data["direction"],
                escape(data["mail_from"] or "<>"),
                escape(", ".join(data["rcpts"])),
                str(data["size"]),
                data["status"],
                str(data["attempts"]),
                dt.datetime.fromtimestamp(nxt).strftime("%H:%M:%S") if nxt else "-",
                escape(data["last_error"] or ""),
            )
        out.print(table)

    @command(queue_app, "retry", help="Make messages due now (also releases held messages).")
    def queue_retry(
        settings: Settings,
        ids: IdsArgument = None,
        spool: SpoolOption = None,
        all_: AllOption = False,
    ) -> None:
        from smtpconn.cli.render import console, print_json
        from smtpconn.relay.queue import open_spool, retry

        done = retry(open_spool(_spool_dir(settings, spool)), ids or [], everything=all_)
        if settings.json:
            print_json({"retried": done})
        else:
            console().print(f"{len(done)} message(s) will be retried now.")

    @command(queue_app, "delete", help="Delete messages from the spool (they are not delivered).")
    def queue_delete(
        settings: Settings,
        ids: IdsArgument = None,
        spool: SpoolOption = None,
        all_: AllOption = False,
    ) -> None:
        from smtpconn.cli.render import console, print_json
        from smtpconn.relay.queue import delete, open_spool

        done = delete(open_spool(_spool_dir(settings, spool)), ids or [], everything=all_)
        if settings.json:
            print_json({"deleted": done})
        else:
            console().print(f"{len(done)} message(s) deleted.")
