"""``smtpconn send-test``: send a test message outbound, inbound, or round trip."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import EXIT_CODES_HELP, command, exit_with
from smtpconn.cli.render import console, error_console, escape, print_json
from smtpconn.errors import ExitCode, UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.sendtest.run import SendTestReport

INSECURE_BANNER = "INSECURE: --insecure is set, server certificates are NOT checked"


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"
    ROUNDTRIP = "roundtrip"


def register(app: typer.Typer) -> None:
    @command(
        app,
        "send-test",
        help="Send a test message for a support address: outbound through your server, inbound "
        "to the relay, or a round trip that proves the whole loop. Inbound and round trip read "
        "the message back from the relay's Maildir sink, so run them where the relay runs. "
        "Never sends AUTH or mail in clear text. " + EXIT_CODES_HELP,
    )
    def send_test(
        settings: Settings,
        address: Annotated[str, typer.Argument(help="The support address (as in the profile).")],
        direction: Annotated[
            Direction, typer.Option("--direction", help="outbound | inbound | roundtrip")
        ] = Direction.OUTBOUND,
        to: Annotated[
            str | None, typer.Option("--to", help="Recipient of an outbound test.")
        ] = None,
        wait: Annotated[
            float,
            typer.Option(
                "--wait",
                help="Seconds to wait for the message to reach the relay's sink (inbound, "
                "roundtrip).",
            ),
        ] = 60.0,
        subject: Annotated[
            str | None, typer.Option("--subject", help="Subject prefix (one line).")
        ] = None,
        body: Annotated[str | None, typer.Option("--body", help="Extra body text.")] = None,
        insecure: Annotated[
            bool,
            typer.Option("--insecure", help="Skip certificate checks (private test set-ups only)."),
        ] = False,
        inbound_password_file: Annotated[
            Path | None,
            typer.Option(
                "--inbound-password-file",
                help="File holding the relay's inbound password (inbound direction; or env "
                "SMTPCONN_INBOUND_PASSWORD).",
            ),
        ] = None,
    ) -> None:
        # asyncio (with ssl, socket, concurrent) costs ~16 ms: only the command itself needs it,
        # not `smtpconn --help` (benchmarks/README.md, start-up).
        import asyncio

        from smtpconn.addresses import parse_address
        from smtpconn.profile.store import load_profile
        from smtpconn.sendtest import run as sendtest

        if insecure:
            settings = replace(settings, insecure=True)
            error_console().print(f"[bold red]{INSECURE_BANNER}[/]")
        if wait < 0:
            raise UsageError("--wait must not be negative")
        if wait == 0 and direction is not Direction.OUTBOUND:
            # Checked before anything is sent: waiting 0 s can only report "did not arrive".
            raise UsageError(
                f"--wait 0 leaves no time for the {direction.value} test message to reach the "
                "relay's sink (nothing was sent)",
                fix="give the seconds to wait, e.g. --wait 30 (default 60)",
            )
        support = parse_address(address)
        loaded = load_profile(settings.profile_path)
        entry = loaded.profile.find(support)
        if entry is None:
            raise UsageError(
                f"{support.display} is not in {settings.profile_path}",
                fix="see `smtpconn list`, or add it with `smtpconn add-address`",
            )
        transcript = _transcript_printer() if settings.verbose else None
        if direction is Direction.OUTBOUND:
            if to is None:
                raise UsageError("--to RECIPIENT is required for an outbound test")
            recipient = parse_address(to)
            report, _ = asyncio.run(
                sendtest.send_outbound(
                    loaded.profile,
                    loaded.base_dir,
                    entry,
                    settings,
                    recipient,
                    subject=subject,
                    body=body,
                    transcript=transcript,
                )
            )
        elif direction is Direction.INBOUND:
            password = _inbound_password(inbound_password_file)
            report = asyncio.run(
                sendtest.send_inbound(
                    loaded.profile,
                    loaded.base_dir,
                    entry,
                    settings,
                    inbound_password=password,
                    wait=wait,
                    transcript=transcript,
                )
            )
        else:
            report = asyncio.run(
                sendtest.roundtrip(
                    loaded.profile,
                    loaded.base_dir,
                    entry,
                    settings,
                    wait=wait,
                    transcript=transcript,
                )
            )
        if settings.json:
            print_json(report.to_json())
        else:
            _render(report)
        exit_with(report.exit_code)


def _inbound_password(path: Path | None) -> str | None:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise UsageError(
                f"cannot read --inbound-password-file {path}: {exc.strerror}"
            ) from None
    return os.environ.get("SMTPCONN_INBOUND_PASSWORD")


def _transcript_printer() -> Callable[[str], None]:
    err = error_console()
    return lambda line: err.print(escape(line), soft_wrap=True, highlight=False)


def _render(report: SendTestReport) -> None:
    out = console()
    if report.insecure:
        out.print(f"[bold red]{INSECURE_BANNER}[/]")
    out.print(
        f"send-test {report.direction}: {escape(report.address)} -> {escape(report.recipient)}"
        f"  token {report.token}"
    )
    d = report.delivery
    if d is not None:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold")
        for column in ("stage", "", "reply", "time"):
            table.add_column(column, overflow="fold")
        for stage in d.stages:
            mark = "[green]ok[/]" if stage.ok else "[red]FAILED[/]"
            reply = f"{stage.code} {stage.text}" if stage.code else stage.text
            table.add_row(stage.stage, mark, escape(reply), f"{stage.seconds * 1000:.0f} ms")
        out.print(table)
        if d.tls is not None:
            out.print(f"TLS: {d.tls.version} {d.tls.cipher}")
        if d.queue_id:
            out.print(f"queue id: {escape(d.queue_id)}")
    if report.direction != "inbound":  # inbound tests stand in for other senders: never signed
        out.print(f"DKIM-signed: {'yes' if report.dkim_signed else 'no (the profile has no key)'}")
    if report.received is not None:
        _render_received(report.received)
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    if report.exit_code is ExitCode.OK:
        out.print("[green]OK[/]")
    else:
        out.print(f"[red]FAILED[/] at the {escape(report.problem)}")
        if report.fix:
            out.print(f"fix: {escape(report.fix)}")


def _render_received(r: dict[str, Any]) -> None:
    out = console()
    tag = r.get("tag") or {}
    out.print(
        f"received by the relay after {r.get('latency_seconds')} s, tagged "
        f"[bold]{escape(tag.get('tag') or 'nothing')}[/]"
        + (f" (mode {escape(tag['mode'])})" if tag.get("mode") else "")
    )
    sender = r.get("sending_server")
    if sender:
        out.print(f"  handed over by: {escape(sender['address'])} (HELO {escape(sender['helo'])})")
    auth = r.get("authentication")
    if auth:
        for method in ("spf", "dkim", "dmarc"):
            found = auth.get(method)
            entries = found if isinstance(found, list) else [found] if found else []
            if not entries:
                out.print(f"  {method.upper()}: none")
            for entry in entries:
                details = ", ".join(
                    f"{k}={v}" for k, v in entry.items() if k not in ("result", "comment")
                )
                comment = f" ({entry['comment']})" if entry.get("comment") else ""
                out.print(
                    f"  {method.upper()}: [bold]{escape(entry['result'])}[/]{escape(comment)}"
                    + (f"  {escape(details)}" if details else "")
                )
    elif r.get("authentication_results") is not None:
        out.print("  no Authentication-Results from the relay on the received copy")
    if "dkim_verified_by_smtpconn" in r:
        out.print(
            f"  DKIM verified by smtpconn: {escape(r['dkim_verified_by_smtpconn']['result'])}"
        )
