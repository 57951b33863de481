"""``smtpconn verify``: DNS, SPF, DKIM, DMARC, MTA-STS (and TLS/AUTH) checks per support address,
each result saying exactly what to fix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from smtpconn.cli.common import EXIT_CODES_HELP, PROCESS, command, exit_with
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.checks.report import VerifyReport

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim", "error": "magenta"}

HELP = (
    "Check DNS, SPF, DKIM, DMARC, MTA-STS and TLS/AUTH for support addresses (all in the profile "
    "when none is named). Statuses: pass, warn, fail (known wrong), skip (could not run because "
    "of an earlier result), error (could not tell: timeout, SERVFAIL). Exit codes: 0 nothing "
    "failed (warnings allowed unless --strict; checks that could not tell are counted in the "
    "output); 1 a check failed (or warned, with --strict); 2 bad usage or profile; 3 nothing "
    "could be checked (every check that ran could not tell, e.g. resolver unreachable)."
)


def register(app: typer.Typer) -> None:
    @command(app, "verify", help=HELP, epilog=EXIT_CODES_HELP)
    def verify(
        settings: Settings,
        addresses: Annotated[
            list[str] | None,
            typer.Argument(metavar="ADDRESS", help="Support addresses to check. [default: all]"),
        ] = None,
        only: Annotated[
            list[str] | None,
            typer.Option(
                "--only",
                metavar="ID|FAMILY",
                help="Run only these checks or families (e.g. spf,dkim.key).",
            ),
        ] = None,
        skip: Annotated[
            list[str] | None,
            typer.Option(
                "--skip",
                metavar="ID|FAMILY",
                help="Leave out these checks or families (e.g. mta-sts,tls).",
            ),
        ] = None,
        strict: Annotated[
            bool, typer.Option("--strict", help="Warnings fail too (exit 1).")
        ] = False,
        deadline: Annotated[
            float | None,
            typer.Option(
                "--deadline", metavar="SECONDS", help="Seconds for the whole run. [default: 120]"
            ),
        ] = None,
        junit: Annotated[
            Path | None,
            typer.Option(
                "--junit",
                metavar="FILE",
                help="Also write JUnit XML (one testcase per address x check).",
            ),
        ] = None,
        blocklist: Annotated[
            list[str] | None,
            typer.Option(
                "--blocklist",
                metavar="ZONE[=DELIST-URL]",
                help="DNS blocklists for dns.blocklist, instead of the defaults (Spamhaus ZEN, "
                "Barracuda, SpamCop, PSBL, Mailspike, NiX Spam); also SMTPCONN_BLOCKLISTS.",
            ),
        ] = None,
        egress_address: Annotated[
            list[str] | None,
            typer.Option(
                "--egress-address",
                metavar="IP",
                help="A public address your mail leaves from (send-test --direction roundtrip "
                "shows it), also looked up on the blocklists.",
            ),
        ] = None,
        insecure: Annotated[
            bool,
            typer.Option(
                "--insecure",
                help="Skip certificate checks (private test set-ups only); reported in every output.",
            ),
        ] = False,
    ) -> None:
        # From the first import to the last line of output: see _no_cyclic_gc.
        with _no_cyclic_gc():
            from smtpconn.checks.runner import DEFAULT_DEADLINE, parse_selection
            from smtpconn.checks.verify import select_entries, verify_profile
            from smtpconn.errors import UsageError
            from smtpconn.profile.store import load_profile

            if insecure:
                from dataclasses import replace

                from smtpconn.cli.render import error_console

                settings = replace(settings, insecure=True)
                error_console().print(
                    "[bold red]INSECURE: --insecure is set, server certificates are NOT checked[/]"
                )
            settings = _blocklist_settings(settings, blocklist or [], egress_address or [])
            if deadline is not None and deadline <= 0:
                raise UsageError("--deadline must be a positive number of seconds")
            selection = parse_selection(only or [], skip or [])
            loaded = load_profile(settings.profile_path)
            entries = select_entries(loaded.profile, addresses or [])
            with _progress_display(settings) as on_progress:
                report = verify_profile(
                    settings,
                    loaded.base_dir,
                    entries,
                    selection=selection,
                    deadline=deadline or DEFAULT_DEADLINE,
                    progress=on_progress,
                )
            if junit is not None:
                from smtpconn.checks.report import junit_xml

                try:
                    junit.write_text(junit_xml(report, strict=strict), encoding="utf-8")
                except OSError as exc:
                    raise UsageError(
                        f"cannot write --junit {junit}: {exc.strerror or exc}"
                    ) from None
            if settings.json:
                from smtpconn.cli.render import print_json

                print_json(report.to_json())
            else:
                _print_tables(report, settings)
            exit_with(report.exit_code(strict=strict))


def _blocklist_settings(settings: Settings, lists: list[str], egress: list[str]) -> Settings:
    """--blocklist (else SMTPCONN_BLOCKLISTS) and --egress-address, checked before anything
    runs: a typo is exit 2, not a run against the wrong list."""
    import ipaddress
    import os
    from dataclasses import replace

    from smtpconn.checks.blocklist import parse_blocklists
    from smtpconn.errors import UsageError

    source = "--blocklist"
    if not lists and os.environ.get("SMTPCONN_BLOCKLISTS", "").strip():
        lists, source = [os.environ["SMTPCONN_BLOCKLISTS"]], "SMTPCONN_BLOCKLISTS"
    parse_blocklists(lists, source)
    addresses = []
    for text in egress:
        try:
            addresses.append(ipaddress.ip_address(text.strip().strip("[]")).compressed)
        except ValueError:
            raise UsageError(
                f"--egress-address {text!r} is not an IP address",
                fix="give the address your mail leaves from, e.g. --egress-address 192.0.2.25",
            ) from None
    return replace(
        settings,
        blocklists=tuple(s for text in lists for s in text.split(",") if s.strip()),
        egress_addresses=tuple(addresses),
    )


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """No cyclic garbage collection during a run. A run allocates fast (dnspython messages, the
    family modules imported in a thread) and its collections kept traversing every long-lived
    object: 40-110 ms of CPU at N = 30, 220 ms at N = 300, in pauses that held up the TLS/AUTH
    session's replies. The imports before the first DNS question (~20 collections, 2-4 ms) and
    the output after the run are covered too. The garbage cycles a run leaves are few (peak RSS
    at N = 300: 71 MiB with the collector, 73 MiB without); they are collected after the run, in
    a long-lived process."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Switched back on, it would first collect every object of the run, still all in the
        # youngest generation (5-15 ms at N = 30), in a process about to end.
        if enabled and not PROCESS.ends_with_command:
            gc.enable()


@contextmanager
def _progress_display(settings: Settings) -> Iterator[Callable[[int, int], None] | None]:
    """Progress only for people watching a terminal: never with --json or when piped."""
    from smtpconn.cli.render import console

    if settings.json or not console().is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console(),
        transient=True,
    ) as progress:
        task = progress.add_task("verify", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def _print_tables(report: VerifyReport, settings: Settings) -> None:
    from rich.table import Table

    from smtpconn.cli.render import console, escape

    out = console()
    if report.insecure:
        out.print("[bold yellow]warning:[/] certificate verification is OFF (--insecure)")
    for address in report.addresses:
        table = Table(title=address.address, title_justify="left", show_lines=False)
        table.add_column("status")
        table.add_column("check")
        table.add_column("result", overflow="fold")
        for check in address.checks:
            style = _STYLE[check.status.value]
            text = escape(check.summary)
            # A skip's fix only points at the check that caused it; repeating it under every
            # skipped check buries the fixes that matter. (--json keeps every fix.)
            if check.fix and check.status.value not in ("pass", "skip"):
                text += f"\n[bold]fix:[/] {escape(check.fix)}"
            if settings.verbose and check.detail:
                text += f"\n[dim]{escape(check.detail)}[/]"
            table.add_row(f"[{style}]{check.status.value}[/]", check.id, text)
        out.print(table)
    summary = report.summary()
    out.print(
        " · ".join(f"[{_STYLE[k]}]{v} {k}[/]" for k, v in summary.items() if v) or "no checks ran"
    )
    incomplete = report.incomplete()
    if incomplete:
        # Exit 0 must not read as "all good" when part of the picture is missing.
        out.print(
            f"[magenta]{incomplete} check{'s' if incomplete != 1 else ''} could not be "
            "completed[/] (status error: could not tell); their results are unknown, not good"
        )
