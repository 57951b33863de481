"""What every command shares: the global options, error handling and exit codes.

Global options (``--profile``, ``--resolver``, ``--ca-file``, ``--timeout``, ``--json``, ``-v``,
``--no-color``) are accepted both before the command (``smtpconn --json list``)
and after it (``smtpconn list --json``): the ``command`` decorator adds them to each command's
signature, so scripts can put them wherever they like. Values given after the command win.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from smtpconn.errors import ExitCode, SmtpconnError, SmtpconnFailure, UsageError
from smtpconn.settings import DEFAULT_PROFILE, DEFAULT_TIMEOUT, Settings

EXIT_CODES_HELP = (
    "Exit codes: 0 all good; 1 a check or test failed; 2 bad usage or bad input (nothing was "
    "changed); 3 could not run (network, server unreachable, timeout)."
)

ProfileOption = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        metavar="PATH",
        envvar="SMTPCONN_PROFILE",
        help="Connector profile (TOML). [default: ./smtpconn.toml]",
        show_default=False,
    ),
]
ResolverOption = Annotated[
    list[str] | None,
    typer.Option(
        "--resolver",
        metavar="HOST[:PORT]",
        help="Nameserver HOST[:PORT] for every DNS lookup; repeatable. [env: SMTPCONN_RESOLVER; "
        "default: the system's]",
        show_default=False,
    ),
]
CaFileOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        metavar="PATH",
        envvar="SMTPCONN_CA_FILE",
        help="Extra trust anchors (PEM) for private CAs.",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help=f"Seconds to wait for each network operation. [default: {DEFAULT_TIMEOUT:g}]",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Machine output on stdout (and nothing else there).")
]
VerboseOption = Annotated[
    bool, typer.Option("-v", "--verbose", help="Show transcripts (secrets redacted).")
]
NoColorOption = Annotated[bool, typer.Option("--no-color", help="Plain output without colour.")]

_GLOBALS: dict[str, Any] = {
    "profile": ProfileOption,
    "resolver": ResolverOption,
    "ca_file": CaFileOption,
    "timeout": TimeoutOption,
    "json_output": JsonOption,
    "verbose": VerboseOption,
    "no_color": NoColorOption,
}
_GLOBAL_DEFAULTS: dict[str, Any] = {
    "profile": None,
    "resolver": None,
    "ca_file": None,
    "timeout": None,
    "json_output": False,
    "verbose": False,
    "no_color": False,
}


RESOLVER_FIX = "e.g. --resolver 127.0.0.1:5353 or SMTPCONN_RESOLVER=192.0.2.53"


def _mta_sts_port(text: str) -> int:
    """The test hook SMTPCONN_MTA_STS_PORT (a lab's policy server); unset means 443."""
    if not text.strip():
        return 443
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise UsageError(
            f"SMTPCONN_MTA_STS_PORT={text!r} is not a port number",
            fix="unset it (senders always use 443) or give a port from 1 to 65535",
        )
    return int(text)


def _resolver_list(text: str) -> tuple[tuple[str, int], ...]:
    """SMTPCONN_RESOLVER. ``smtpconn.dns`` (dnspython, asyncio, ssl: ~30 ms of every start-up)
    is imported only when there is something to parse: commands that resolve nothing never
    load it."""
    if not text.replace(",", " ").split():
        return ()
    from smtpconn.dns.resolvers import parse_resolver_list

    return parse_resolver_list(text, fix=RESOLVER_FIX)


def settings_from_options(values: dict[str, Any], base: Settings | None = None) -> Settings:
    """Merge option values (None/False = not given) over ``base`` and the environment."""
    settings = base or Settings(
        profile_path=DEFAULT_PROFILE,
        resolvers=_resolver_list(os.environ.get("SMTPCONN_RESOLVER", "")),
        mta_sts_port=_mta_sts_port(os.environ.get("SMTPCONN_MTA_STS_PORT", "")),
    )
    changes: dict[str, Any] = {}
    if values.get("profile") is not None:
        changes["profile_path"] = values["profile"]
    if values.get("resolver"):
        from smtpconn.dns.resolvers import parse_resolver

        changes["resolvers"] = tuple(
            parse_resolver(v, source="--resolver", fix=RESOLVER_FIX) for v in values["resolver"]
        )
    if values.get("ca_file") is not None:
        changes["ca_file"] = values["ca_file"]
    if values.get("timeout") is not None:
        if values["timeout"] <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        changes["timeout"] = values["timeout"]
    if values.get("json_output"):
        changes["json"] = True
    if values.get("verbose"):
        changes["verbose"] = True
    if values.get("no_color"):
        changes["no_color"] = True
    return replace(settings, **changes)


def internal_error(error: Exception, *, verbose: bool, json_output: bool) -> NoReturn:
    """A bug of ours: say so plainly, the traceback only with -v."""
    if verbose:
        raise error
    fail(
        SmtpconnError(
            f"internal error: {type(error).__name__}: {error}",
            fix="run again with -v for the traceback and report it",
        ),
        json_output=json_output,
        exit_code=ExitCode.COULD_NOT_RUN,
    )


# How a user gives each input a library error may name (``SmtpconnError.input``): the library
# speaks of the value, the command line of the option or variable that carries it.
INPUT_OPTIONS = {
    "profile": "--profile PATH or SMTPCONN_PROFILE",
    "subject": "--subject",
    "inbound_password": "--inbound-password-file PATH or SMTPCONN_INBOUND_PASSWORD",
    "direction": "--direction outbound|inbound|roundtrip",
}


def _fix_with_option(error: SmtpconnError) -> str | None:
    option = INPUT_OPTIONS.get(error.input or "")
    if option is None:
        return error.fix
    return f"{error.fix} ({option})" if error.fix else option


def fail(error: SmtpconnError, *, json_output: bool, exit_code: ExitCode | None = None) -> NoReturn:
    """Report ``error`` on stderr (and as JSON on stdout for scripts) and exit with its code."""
    report(error, json_output=json_output)
    raise typer.Exit(int(exit_code if exit_code is not None else error.exit_code))


def report(error: SmtpconnError, *, json_output: bool) -> None:
    """``error:`` and ``fix:`` on stderr, and with ``json_output`` the error object on stdout."""
    from smtpconn.cli.render import error_console, escape, print_json

    fix = _fix_with_option(error)

    if json_output:
        print_json(
            {
                "error": {
                    "message": error.message,
                    "fix": fix,
                    "exit_code": int(error.exit_code),
                }
            }
        )
    console = error_console()
    console.print(f"[bold red]error:[/] {escape(error.message)}", soft_wrap=True)
    if fix:
        console.print(f"[bold]fix:[/] {escape(fix)}", soft_wrap=True)


def command(app: typer.Typer, name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register ``func`` as a command that also takes the global options and whose library
    errors become a clear message and the right exit code. ``func`` receives ``settings``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        added = [
            inspect.Parameter(
                n, inspect.Parameter.KEYWORD_ONLY, default=_GLOBAL_DEFAULTS[n], annotation=a
            )
            for n, a in _GLOBALS.items()
        ]
        # typer injects the click context into a parameter annotated typer.Context; through it
        # the global options given before the command reach the command.
        added.append(
            inspect.Parameter(
                "smtpconn_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
            )
        )

        @functools.wraps(func)
        def wrapper(*args: Any, **values: Any) -> Any:
            global_values = {n: values.pop(n) for n in _GLOBALS}
            base = _settings_of(values.pop("smtpconn_ctx"))
            json_output = bool(global_values["json_output"]) or (base is not None and base.json)
            verbose = bool(global_values["verbose"]) or (base is not None and base.verbose)
            try:
                settings = settings_from_options(global_values, base)
                return func(*args, settings=settings, **values)
            except SmtpconnFailure as error:  # meant for the layer that called: a bug of ours
                internal_error(error, verbose=verbose, json_output=json_output)
            except SmtpconnError as error:
                fail(error, json_output=json_output)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort, SystemExit):
                raise
            except Exception as error:  # a bug of ours
                internal_error(error, verbose=verbose, json_output=json_output)

        wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {
            **{p.name: p.annotation for p in own},
            **_GLOBALS,
            "smtpconn_ctx": typer.Context,
            "return": signature.return_annotation,
        }
        app.command(name, **kwargs)(wrapper)
        return func

    return decorate


def _settings_of(ctx: typer.Context | None) -> Settings | None:
    """The Settings built from options given before the command (by the app's callback)."""
    while ctx is not None:
        if isinstance(ctx.obj, Settings):
            return ctx.obj
        ctx = ctx.parent  # type: ignore[assignment]
    return None


@dataclass
class _Process:
    ends_with_command: bool = False


#: Set by the console entry point (``app.main``): the process ends when the command returns, so
#: what a short command allocated never needs collecting (``verify._no_cyclic_gc``). Commands run
#: in-process by a caller (tests, CliRunner) find it unset.
PROCESS = _Process()


def exit_with(code: ExitCode | int) -> NoReturn:
    raise typer.Exit(int(code))
