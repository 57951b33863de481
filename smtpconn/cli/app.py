"""The ``smtpconn`` command: a typer app whose commands live one per module.

Each command module exposes ``register(app)``; it is imported, and its commands built, only when
one of its commands runs or ``--help`` lists them (``COMMANDS``, ``smtpconn.cli.lazy``). Heavy
libraries (dnspython, dkimpy, aiosmtpd, cryptography) are imported inside the functions that
need them.
"""

# ruff: noqa: E402 - the collector is switched off before the other imports

from __future__ import annotations

import gc

# No cyclic garbage collection while the CLI loads: typer and click made ~25 collections here,
# each traversing what the imports had just built, which lives until the process ends. At the
# end of this module the collector is back on; the console entry point (main) then freezes what
# the imports built (never traversed again), a caller importing the app in-process keeps its heap
# as it was (verify switches the collector off again for its whole run: cli/verify.py).
_COLLECTING = gc.isenabled()
gc.disable()

import functools
import importlib
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context
from typer.main import get_group_from_info
from typer.models import TyperInfo

from smtpconn import __version__
from smtpconn.cli import coercion
from smtpconn.cli.common import (
    EXIT_CODES_HELP,
    PROCESS,
    CaFileOption,
    JsonOption,
    NoColorOption,
    ProfileOption,
    ResolverOption,
    TimeoutOption,
    VerboseOption,
    fail,
    settings_from_options,
)
from smtpconn.cli.lazy import LazyCommands
from smtpconn.cli.usage import ReportingGroup
from smtpconn.errors import SmtpconnError

# Every command (or command group) in the order `smtpconn --help` lists them, and the module under
# smtpconn.cli whose ``register(app)`` adds it. A module is imported when one of its commands is
# looked up (tests/unit/cli/test_lazy_commands.py checks this table against the modules).
COMMANDS = {
    "add-address": "add_address",
    "remove-address": "remove_address",
    "list": "list_addresses",
    "send-test": "send_test",
    "verify": "verify",
    "relay": "relay",
    "submission-credentials": "submission_credentials",
    "rotate-credentials": "rotate_credentials",
    "status": "status",
    "import": "bulk",
    "export": "bulk",
    "profile": "profile_cmd",
    "queue": "queue",
    "oauth": "oauth",
}

coercion.install()


class SmtpconnGroup(ReportingGroup):
    """The top-level group, with its commands built on first use."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(COMMANDS, _commands_of, self.commands)

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)  # typer's own reads every command; the names are enough


@functools.cache
def _registered(module: str) -> typer.Typer:
    """The commands of one module, registered once per process (as at import before)."""
    holder = typer.Typer()
    importlib.import_module(f"smtpconn.cli.{module}").register(holder)
    return holder


def _commands_of(module: str) -> dict[str, Command]:
    """One module's click commands, built exactly as typer builds the app's own."""
    group = get_group_from_info(
        TyperInfo(_registered(module)),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )
    return dict(group.commands)


app = typer.Typer(
    name="smtpconn",
    cls=SmtpconnGroup,
    help="Connect your own mail server to a help desk through an authenticated SMTP connector: "
    "add support addresses, verify DNS/SPF/DKIM/DMARC/TLS/AUTH, send test messages, run the relay.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smtpconn {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    ctx: typer.Context,
    profile: ProfileOption = None,
    resolver: ResolverOption = None,
    ca_file: CaFileOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
    no_color: NoColorOption = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    values = {
        "profile": profile,
        "resolver": resolver,
        "ca_file": ca_file,
        "timeout": timeout,
        "json_output": json_output,
        "verbose": verbose,
        "no_color": no_color,
    }
    try:
        ctx.obj = settings_from_options(values)
    except SmtpconnError as error:
        fail(error, json_output=json_output)


if _COLLECTING:
    gc.enable()


def main() -> None:
    PROCESS.ends_with_command = True
    gc.freeze()  # what the imports built lives until the process ends: never traverse it again
    try:
        app(prog_name="smtpconn")
    finally:
        # The process ends next. Its final collections would traverse every object the command
        # left behind, imports included (~30-40 ms after verify); nothing they free matters now.
        gc.freeze()
