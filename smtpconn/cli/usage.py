"""Command-line mistakes that click itself finds, reported like every other bad input.

click (typer's own copy of it; typer is pinned) reports an unknown option, a missing argument or
a value that does not parse with its own ``Usage: … Error: …`` text and nothing on stdout, so a
script running with ``--json`` got an empty document to parse. This group turns those errors into the ``error:``/``fix:`` lines (and, with
``--json``, the ``{"error": …}`` object) that every other refusal uses; the exit code stays 2.
"""

from __future__ import annotations

from typing import IO, Any

from typer._click.core import Context
from typer._click.exceptions import BadParameter, MissingParameter, NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from smtpconn.errors import ExitCode, UsageError

_RAW_ARGS = "smtpconn.raw_args"


class ReportingGroup(TyperGroup):
    """The top-level group: remembers the raw arguments and reports usage errors our way."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        raw_args = list(args)  # click's parser consumes the list it is given
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise  # the help text, as asked for
        except ClickUsageError as error:
            raise ReportedUsageError(error, json_output="--json" in raw_args) from None
        ctx.meta[_RAW_ARGS] = raw_args
        return ctx

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ReportedUsageError, NoArgsIsHelpError):
            raise
        except ClickUsageError as error:
            json_output = "--json" in ctx.meta.get(_RAW_ARGS, ())
            raise ReportedUsageError(error, json_output=json_output) from None


class ReportedUsageError(ClickUsageError, UsageError):
    """click's usage error, shown as ``error:``/``fix:`` (and JSON on stdout with --json); also
    one of smtpconn's own errors (exit 2), so it is reported by the one function that reports
    them all."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, error: ClickUsageError, *, json_output: bool) -> None:
        ClickUsageError.__init__(self, error.format_message(), error.ctx)
        self.fix = _fix_for(error)
        self.json_output = json_output

    def show(self, file: IO[Any] | None = None) -> None:
        from smtpconn.cli.common import report

        report(self, json_output=self.json_output)


def _fix_for(error: ClickUsageError) -> str:
    help_command = f"{error.ctx.command_path} -h" if error.ctx else "smtpconn -h"
    if isinstance(error, BadParameter) and error.param is not None:
        param = error.param
        name = param.opts[0] if param.param_type_name == "option" else (param.name or "").upper()
        if isinstance(error, MissingParameter):
            return f"give {name}; `{help_command}` describes it"
        return f"give {name} a value it takes; `{help_command}` describes it"
    return f"`{help_command}` lists the arguments and options"
