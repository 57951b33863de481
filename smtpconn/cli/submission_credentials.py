"""``smtpconn submission-credentials``: set (or --remove) the login the help desk uses on the
relay's submission listener."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import command
from smtpconn.cli.render import console, escape, print_json
from smtpconn.errors import UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.profile.submission import SubmissionPlan

HELP = """Set the login the help desk submits replies with (AUTH on the relay's submission
listener), or remove it with --remove.

A strong password is generated and shown once (or written to --password-file, mode 0600); the
profile keeps only its scrypt hash in [relay] submission_username / submission_password_hash.
Running it again replaces the password. A submission listener on a non-loopback address needs
this login (and relay.tls_cert / tls_key): the relay refuses to start otherwise.
"""


def register(app: typer.Typer) -> None:
    @command(app, "submission-credentials", help=HELP)
    def submission_credentials(
        settings: Settings,
        username: Annotated[
            str | None, typer.Option(help="User name the help desk logs in with.")
        ] = None,
        password_file: Annotated[
            Path | None,
            typer.Option(
                help="Write the generated password to this file (0600) instead of showing it."
            ),
        ] = None,
        remove: Annotated[
            bool, typer.Option("--remove", help="Clear the submission login (no AUTH).")
        ] = False,
    ) -> None:
        from smtpconn.cli.add_address import write_password_file
        from smtpconn.profile.store import load_profile, locked, save_profile
        from smtpconn.profile.submission import plan_remove_submission, plan_set_submission

        if remove and (username is not None or password_file is not None):
            raise UsageError(
                "--remove cannot be combined with --username or --password-file",
                fix="use --remove alone to clear the login, or --username NAME to set one",
            )
        if not remove and username is None:
            raise UsageError(
                "--username is required",
                fix="e.g. smtpconn submission-credentials --username helpdesk (or --remove)",
            )
        path = settings.profile_path
        with locked(path):
            loaded = load_profile(path)
            if remove:
                plan = plan_remove_submission(loaded.profile)
            else:
                assert username is not None
                plan = plan_set_submission(loaded.profile, username, username_name="--username")
            if not plan.changed:
                _report(settings, plan, None)
                return
            if password_file is not None and plan.password is not None:
                write_password_file(password_file, plan.password, "--password-file")
            try:
                save_profile(path, plan.profile, loaded.raw)
            except BaseException:
                if password_file is not None:
                    password_file.unlink(missing_ok=True)
                raise
        _report(settings, plan, password_file)


def _report(settings: Settings, plan: SubmissionPlan, password_file: Path | None) -> None:
    action = "set" if plan.username is not None else "removed" if plan.changed else "unchanged"
    if settings.json:
        document: dict[str, Any] = {
            "action": action,
            "profile": str(settings.profile_path),
            "submission_username": plan.username,
            "previous_username": plan.previous_username,
        }
        if plan.password is not None:
            if password_file is not None:
                document["submission_password_file"] = str(password_file)
            else:
                document["submission_password"] = plan.password
        print_json(document)
        return
    out = console()
    where = escape(str(settings.profile_path))
    if plan.username is None:
        if plan.changed:
            out.print(
                f"[green]✓[/] Removed the submission login "
                f"{escape(plan.previous_username or '')} from {where}: the submission listener "
                "no longer takes AUTH (the relay then only starts on a loopback address)."
            )
        else:
            out.print(f"No submission login is set in {where}; nothing was changed.")
        return
    replaced = (
        f" (replaces {escape(plan.previous_username)})"
        if plan.previous_username is not None
        else ""
    )
    out.print(f"[green]✓[/] Submission login set in {where}{replaced}.")
    out.print(f"  user name: {escape(plan.username)}")
    if password_file is not None:
        out.print(f"  password:  written to {escape(str(password_file))} (mode 0600)")
    else:
        out.print(f"  password:  {escape(plan.password or '')}")
        out.print("[yellow]  Shown once: only its hash is kept. Store it now.[/]")
    out.print(
        "  The help desk submits replies with it (STARTTLS, then AUTH PLAIN or LOGIN); restart "
        "the relay for the change to take effect."
    )
