"""``smtpconn queue list|retry|delete``: inspect and act on the relay's spool."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import command
from smtpconn.errors import UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.relay.spool import Spool

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


def _open_spool(settings: Settings, spool: str | None) -> Spool:
    """The spool the options or the profile name; a missing one is reported with the option."""
    from smtpconn.relay.queue import open_spool

    directory = _spool_dir(settings, spool)
    if not directory.is_dir():
        raise UsageError(
            f"no spool at {directory}",
            fix="point --spool (or relay.spool in the profile) at the relay's spool folder",
        )
    return open_spool(directory)


def _require_ids(ids: list[str] | None, everything: bool) -> list[str]:
    if not ids and not everything:
        raise UsageError("give one or more message ids, or --all", fix="see smtpconn queue list")
    return ids or []


def _when(timestamp: float | None, now: float) -> str:
    if not timestamp:
        return "-"
    delta = timestamp - now
    if delta <= 0:
        return "now"
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= seconds:
            return f"in {int(delta // seconds)}{unit}"
    return f"in {int(delta)}s"


def _printable(text: str) -> str:
    # Addresses and errors come from remote servers: no terminal control sequences on screen.
    return "".join(c if c.isprintable() else "?" for c in " ".join(text.split()))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "\u2026"


def render_queue(items: list[dict[str, Any]], *, width: int, verbose: bool) -> list[str]:
    """Plain lines, like ``mailq``: one summary line per message that fits ``width`` (the
    recipient column takes what is left), the last error on its own indented line below it
    (cut to the width unless ``verbose``, which also adds the full id, sender and size)."""
    import time

    now = time.time()
    id_width = max(8, *(len(i["id"] if verbose else i["short_id"]) for i in items))
    head = f"{'ID':<{id_width}}  DIR  {'STATUS':<9}  TRIES  {'NEXT':<7}  "
    room = max(20, width - len(head))
    lines = [head + "RECIPIENT"]
    for item in items:
        rcpts = [_printable(r) for r in item["rcpts"]]
        rcpt = rcpts[0] if rcpts else "-"
        if len(rcpts) > 1:
            rcpt += f" (+{len(rcpts) - 1})"
        next_try = "held" if item["status"] == "held" else _when(item["next_attempt"], now)
        lines.append(
            f"{item['id'] if verbose else item['short_id']:<{id_width}}  "
            f"{'in' if item['direction'] == 'inbound' else 'out':<3}  "
            f"{item['status']:<9}  {item['attempts']:>5}  {next_try:<7}  "
            + (rcpt if verbose else _fit(rcpt, room))
        )
        indent = " " * (id_width + 2)
        if verbose:
            lines.append(
                f"{indent}from {_printable(item['mail_from']) or '<>'}, {item['size']} bytes"
            )
            if len(rcpts) > 1:
                lines.append(f"{indent}to {', '.join(rcpts)}")
        if item.get("throttled_until"):
            lines.append(
                f"{indent}throttled until {item['throttled_until']}"
                + (f" by {_printable(item['server'])}" if item.get("server") else "")
            )
        if item["last_error"]:
            error = _printable(str(item["last_error"]))
            lines.append(indent + (error if verbose else _fit(error, max(20, width - len(indent)))))
    return lines


def register(app: typer.Typer) -> None:
    queue_app = typer.Typer(
        help="Inspect the relay's spool: list messages waiting, retry them now, delete them.",
        no_args_is_help=True,
    )
    app.add_typer(queue_app, name="queue")

    @command(
        queue_app,
        "list",
        help="List queued, deferred and held messages (-v: full ids, senders, sizes, errors).",
    )
    def queue_list(
        settings: Settings,
        spool: SpoolOption = None,
        direction: Annotated[
            str | None, typer.Option(help="inbound | outbound. [default: both]")
        ] = None,
    ) -> None:
        from smtpconn.cli.render import console, print_json
        from smtpconn.relay.queue import lanes_report, list_queue

        if direction not in (None, "inbound", "outbound"):
            raise UsageError(f"--direction {direction!r} is not inbound or outbound")
        opened = _open_spool(settings, spool)
        items = list_queue(opened, direction)
        lanes = lanes_report(opened)
        if settings.json:
            print_json({"messages": [i.to_json() for i in items], "lanes": lanes})
            return
        out = console()
        for lane in lanes:
            out.print(
                f"server {_printable(lane['server'])} throttled until {lane['throttled_until']}: "
                + _printable(str(lane["reason"] or "")),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if not items:
            out.print("The spool is empty: everything was delivered.")
            return
        for line in render_queue(
            [i.to_json() for i in items], width=out.width, verbose=settings.verbose
        ):
            out.print(line, markup=False, highlight=False, soft_wrap=True)

    @command(queue_app, "retry", help="Make messages due now (also releases held messages).")
    def queue_retry(
        settings: Settings,
        ids: IdsArgument = None,
        spool: SpoolOption = None,
        all_: AllOption = False,
    ) -> None:
        from smtpconn.cli.render import console, print_json
        from smtpconn.relay.queue import retry

        # The spool first, then the ids: the order the library checks them in.
        done = retry(_open_spool(settings, spool), _require_ids(ids, all_), everything=all_)
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
        from smtpconn.relay.queue import delete

        # The spool first, then the ids: the order the library checks them in.
        done = delete(_open_spool(settings, spool), _require_ids(ids, all_), everything=all_)
        if settings.json:
            print_json({"deleted": done})
        else:
            console().print(f"{len(done)} message(s) deleted.")
