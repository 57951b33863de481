"""``smtpconn profile validate``: check the profile without touching it."""

from __future__ import annotations

import typer

from smtpconn.cli.common import command, exit_with
from smtpconn.cli.render import console, error_console, escape, print_json
from smtpconn.errors import ExitCode, ProfileError
from smtpconn.settings import Settings


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Work with the connector profile file.", no_args_is_help=True)
    app.add_typer(group, name="profile")

    @command(
        group,
        "validate",
        help="Check the profile: TOML syntax, known keys, values, secret references. Exit 0 valid, 2 not.",
    )
    def validate(settings: Settings) -> None:
        from smtpconn.profile.store import load_profile
        from smtpconn.profile.validate import references_findings

        path = settings.profile_path
        findings: list[str] = []
        warnings: list[str] = []
        count = 0
        try:
            loaded = load_profile(path)
        except ProfileError as error:
            findings = error.details or [error.message]
        else:
            count = len(loaded.profile.addresses)
            findings, warnings = references_findings(loaded.profile, loaded.base_dir)
        valid = not findings
        if settings.json:
            print_json(
                {
                    "profile": str(path),
                    "valid": valid,
                    "addresses": count,
                    "findings": findings,
                    "warnings": warnings,
                }
            )
        else:
            for message in findings:
                error_console().print(f"[red]✗[/] {escape(message)}", soft_wrap=True)
            for message in warnings:
                error_console().print(f"[yellow]![/] {escape(message)}", soft_wrap=True)
            if valid:
                console().print(
                    f"[green]✓[/] {escape(str(path))} is valid ({count} support address{'es' if count != 1 else ''})"
                )
        if not valid:
            exit_with(ExitCode.BAD_INPUT)
