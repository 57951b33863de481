"""``smtpconn status``: per support address, the last mail in and out, the last error, what
waits in the spool; exit 1 when an address's last error is newer than its last success."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import typer

from smtpconn.cli.common import command, exit_with
from smtpconn.cli.render import console, escape, print_json
from smtpconn.errors import ExitCode
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.relay.status import StatusReport

HELP = """Show, per support address, when mail last arrived and went out, the last error (when,
at which stage, the server's reply), how many messages are queued or held and the oldest one's
age, a pending credential rotation and when the last OAuth token expires. Works whether the
relay runs or not: it reads the profile, the spool and the status file the relay keeps there.
Exit 1 when an address's last error is newer than its last success.
"""


def register(app: typer.Typer) -> None:
    @command(app, "status", help=HELP)
    def status(settings: Settings) -> None:
        from smtpconn.profile.store import load_profile
        from smtpconn.relay.config import RelayOverrides, build_config
        from smtpconn.relay.status import status_report

        loaded = load_profile(settings.profile_path)
        config = build_config(loaded.profile, loaded.base_dir, settings, RelayOverrides())
        report = status_report(config)
        if settings.json:
            print_json(report.to_json())
        else:
            _print(report)
        if report.failing:
            exit_with(ExitCode.CHECK_FAILED)


def _ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never"
    return _age(now - timestamp) + " ago"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _token_line(expires: str, now: float) -> str:
    """The last OAuth token's expiry; an expired one is normal between deliveries (the next
    delivery fetches a new one), so it is stated, not flagged."""
    from datetime import datetime

    left = datetime.fromisoformat(expires).timestamp() - now
    if left > 0:
        return f"    OAuth token valid until {escape(expires)} (in {_age(left)})"
    return f"    last OAuth token expired {escape(expires)} ({_age(-left)} ago)"


def _print(report: StatusReport) -> None:
    from smtpconn.message.escaping import escape_controls

    out = console()
    now = time.time()
    relay = report.relay
    pid = f" (pid {relay['pid']})" if relay["pid"] else ""
    running = f"running{pid}" if relay["running"] else "not running"
    out.print(f"relay: {running}; spool {escape(relay['spool'])}")
    for item in report.addresses:
        mark = "[red]✗[/]" if item["failing"] else "[green]✓[/]"
        out.print(f"{mark} {escape(item['address'])} ({item['mode']})")
        out.print(
            f"    in: accepted {_ago(item['last_inbound_accepted'], now)}, handed to the help "
            f"desk {_ago(item['last_inbound_delivered'], now)}; "
            f"out: delivered {_ago(item['last_outbound_delivered'], now)}"
        )
        waiting: dict[str, Any] = item
        if waiting["queued"]:
            oldest = _age(waiting["oldest_queued_age"] or 0.0)
            out.print(f"    queued {waiting['queued']} (held {waiting['held']}), oldest {oldest}")
        error = item["last_error"]
        if error:
            reply = escape(escape_controls(str(error.get("reply", ""))[:200]))
            out.print(
                f"    last error {_ago(error.get('time'), now)} at {escape(str(error.get('stage')))}: {reply}"
            )
        if item["inbound_credential_age"] is not None:
            out.print(f"    inbound password set {_age(item['inbound_credential_age'])} ago")
        if item["inbound_rotation_until"]:
            out.print(
                f"    rotating inbound password: old one valid until {item['inbound_rotation_until']}"
            )
        if item["token_expires"]:
            out.print(_token_line(item["token_expires"], now))
        if item["throttled_until"]:
            out.print(f"    outbound server throttled until {escape(item['throttled_until'])}")
    for lane in relay.get("lanes", []):
        reason = escape(escape_controls(str(lane.get("reason") or ""))[:200])
        out.print(
            f"server {escape(lane['server'])} throttled until "
            f"{escape(str(lane['throttled_until']))}: {reason}"
        )
