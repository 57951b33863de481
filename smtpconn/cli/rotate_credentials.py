"""``smtpconn rotate-credentials``: a new inbound (or submission) password, the old one still
accepted for a grace period so the customer's server can switch without being refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smtpconn.cli.common import command
from smtpconn.cli.render import console, escape, print_json
from smtpconn.errors import UsageError
from smtpconn.settings import Settings

if TYPE_CHECKING:
    from smtpconn.profile.rotation import RotationPlan

HELP = """Give ADDRESS's inbound login a new password (or, with --submission, the help desk's
submission login), keeping the old one valid until --grace ends (default 7d; units s, m, h, d, w;
0 revokes it at once).

The new password is shown once (or written to --inbound-password-file, mode 0600); the profile
keeps both scrypt hashes, the old one with its expiry. A login shared by several addresses is
rotated for all of them. The relay logs event=auth.ok ... credential=previous while the old
password is still used, so you can see when the customer's server switched; `smtpconn list`
shows the pending rotation. A running relay accepts the new password once reloaded
(smtpconn relay --reload, or SIGHUP).
"""


def register(app: typer.Typer) -> None:
    @command(app, "rotate-credentials", help=HELP)
    def rotate_credentials(
        settings: Settings,
        address: Annotated[
            str | None, typer.Argument(help="The support address whose inbound login rotates.")
        ] = None,
        grace: Annotated[
            str, typer.Option(help="How long the old password stays valid (0: revoke now).")
        ] = "7d",
        password_file: Annotated[
            Path | None,
            typer.Option(
                "--inbound-password-file",
                "--password-file",
                help="Write the new password to this file (0600) instead of showing it.",
            ),
        ] = None,
        submission: Annotated[
            bool, typer.Option("--submission", help="Rotate the submission login instead.")
        ] = False,
    ) -> None:
        from smtpconn.cli.add_address import write_password_file
        from smtpconn.profile.rotation import (
            parse_grace,
            plan_rotate_inbound,
            plan_rotate_submission,
        )
        from smtpconn.profile.store import load_profile, locked, save_profile

        if submission == (address is not None):
            raise UsageError(
                "give either ADDRESS or --submission",
                fix="e.g. smtpconn rotate-credentials support@example.com --grace 7d",
            )
        period = parse_grace(grace, name="--grace")
        now = datetime.now(UTC)
        path = settings.profile_path
        with locked(path):
            loaded = load_profile(path)
            if address is not None:
                plan = plan_rotate_inbound(loaded.profile, address, period, now)
            else:
                plan = plan_rotate_submission(loaded.profile, period, now)
            if password_file is not None:
                write_password_file(password_file, plan.password, "--inbound-password-file")
            try:
                save_profile(path, plan.profile, loaded.raw)
            except BaseException:
                if password_file is not None:
                    password_file.unlink(missing_ok=True)
                raise
        _report(settings, plan, password_file, submission=submission)


def _report(
    settings: Settings, plan: RotationPlan, password_file: Path | None, *, submission: bool
) -> None:
    until = plan.previous_valid_until
    if settings.json:
        document: dict[str, Any] = {
            "action": "rotated",
            "profile": str(settings.profile_path),
            "login": "submission" if submission else "inbound",
            "username": plan.username,
            "addresses": [a.ascii for a in plan.addresses],
            "previous_valid_until": until.isoformat() if until else None,
            "revoked_pending_until": (
                plan.revoked_pending_until.isoformat() if plan.revoked_pending_until else None
            ),
        }
        if password_file is not None:
            document["password_file"] = str(password_file)
        else:
            document["password"] = plan.password
        print_json(document)
        return
    out = console()
    which = "submission login" if submission else "inbound login"
    served = ", ".join(a.display for a in plan.addresses)
    out.print(
        f"[green]✓[/] New password for the {which} {escape(plan.username)}"
        + (f" ({escape(served)})" if served else "")
        + "."
    )
    if password_file is not None:
        out.print(f"  password:  written to {escape(str(password_file))} (mode 0600)")
    else:
        out.print(f"  password:  {escape(plan.password)}")
        out.print("[yellow]  Shown once: only its hash is kept. Store it now.[/]")
    if until is None:
        out.print("  The old password is revoked now.")
    else:
        out.print(f"  The old password stays valid until {until.isoformat()}.")
    if plan.revoked_pending_until is not None:
        out.print(
            "[yellow]  The password an earlier rotation kept (valid until "
            f"{plan.revoked_pending_until.isoformat()}) is revoked now.[/]"
        )
    out.print(
        "  Reload a running relay (smtpconn relay --reload) for it to accept the new password."
    )
