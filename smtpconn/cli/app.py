"""The ``smtpconn`` command: a typer app whose commands live one per module.

Each command module exposes ``register(app)``; importing them is cheap because heavy libraries
(dnspython, dkimpy, aiosmtpd, cryptography) are imported inside the functions that need them.
"""

from __future__ import annotations

import gc
import importlib
from typing import Annotated

import typer

from smtpconn import __version__
from smtpconn.cli import coercion
from smtpconn.cli.common import (
    EXIT_CODES_HELP,
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
from smtpconn.cli.usage import ReportingGroup
from smtpconn.errors import SmtpconnError

# One module per command (or command group); each adds itself to the app.
COMMAND_MODULES = (
    "add_address",
    "remove_address",
    "list_addresses",
    "profile_cmd",
    "send_test",
    "verify",
    "relay",
    "queue",
    "submission_credentials",
    "oauth",
    "rotate_credentials",
    "status",
    "bulk",
)

coercion.install()

app = typer.Typer(
    name="smtpconn",
    cls=ReportingGroup,
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


for _name in COMMAND_MODULES:
    importlib.import_module(f"smtpconn.cli.{_name}").register(app)


def main() -> None:
    try:
        app(prog_name="smtpconn")
    finally:
        # The process ends next. Its final collections would traverse every object the command
        # left behind, imports included (~30-40 ms after verify); nothing they free matters now.
        gc.freeze()
