"""Commands are built on first use (smtpconn/cli/lazy.py, COMMANDS in smtpconn/cli/app.py), and
the app is still exactly the one that registering every module up front built."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer._click.core import Command, Context
from typer.main import get_command, get_group_from_info
from typer.models import TyperInfo

import smtpconn.cli
from smtpconn.cli.app import COMMANDS, app
from smtpconn.cli.lazy import LazyCommands
from tests.conftest import CliInvoker


def _eager_group() -> typer.core.TyperGroup:
    """The app as it was built before: every module registered into one Typer at once."""
    eager = typer.Typer()
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f"smtpconn.cli.{module}").register(eager)
    return get_group_from_info(
        TyperInfo(eager),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # two builds of one function differ only there


def _info(command: Command, parent: Context) -> dict[str, Any]:
    """What a user sees of a command (its help) and what its parser takes, sub-commands too."""
    ctx = Context(command, parent=parent, info_name=command.name)
    params = [
        {k: _ADDRESS.sub("", repr(v)) for k, v in vars(p).items() if k != "callback"}
        for p in command.params
    ]
    subs = getattr(command, "commands", {})
    return {
        "class": type(command).__name__,
        "help": command.get_help(ctx),
        "params": params,
        "callback": getattr(command.callback, "__qualname__", None),
        "commands": {name: _info(sub, ctx) for name, sub in subs.items()},
    }


def test_every_command_module_is_in_the_table() -> None:
    registering = {
        info.name
        for info in pkgutil.iter_modules(smtpconn.cli.__path__)
        if hasattr(importlib.import_module(f"smtpconn.cli.{info.name}"), "register")
    }
    assert registering == set(COMMANDS.values())


def test_lazy_commands_equal_the_eagerly_built_ones_in_the_same_order() -> None:
    eager = _eager_group()
    lazy = get_command(app)
    assert isinstance(lazy, typer.core.TyperGroup)
    root = Context(lazy, info_name="smtpconn")
    assert list(lazy.commands) == list(eager.commands) == list(COMMANDS)
    assert lazy.list_commands(root) == list(COMMANDS)
    for name, command in eager.commands.items():
        built = lazy.get_command(root, name)
        assert built is not None
        assert _info(built, root) == _info(command, root), name


def test_help_lists_every_command_in_order(cli: CliInvoker) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == list(COMMANDS)


def _modules_loaded(args: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from smtpconn.cli.app import main\n"
        f"sys.argv = ['smtpconn', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(' '.join(m for m in sys.modules if m.startswith('smtpconn.cli.')), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return set(done.stderr.split()[-40:])


def test_a_command_loads_only_its_own_module() -> None:
    loaded = _modules_loaded(["list", "--help"])
    assert "smtpconn.cli.list_addresses" in loaded
    assert not loaded & {f"smtpconn.cli.{m}" for m in COMMANDS.values() if m != "list_addresses"}


def test_an_unknown_command_loads_no_command_and_still_suggests(cli: CliInvoker) -> None:
    assert not _modules_loaded(["add-adress"]) & {f"smtpconn.cli.{m}" for m in COMMANDS.values()}
    result = cli("add-adress", "support@example.com")
    assert result.exit_code == 2
    assert "error: No such command 'add-adress'. Did you mean 'add-address'?" in result.stderr
    assert "fix: `smtpconn -h` lists the arguments and options" in result.stderr


def _fake(name: str) -> Command:
    return typer.core.TyperCommand(name)


def test_lazy_commands_mapping() -> None:
    loads: list[str] = []

    def load(module: str) -> dict[str, Command]:
        loads.append(module)
        return {"a": _fake("a"), "b": _fake("b")} if module == "ab" else {}

    commands = LazyCommands({"a": "ab", "b": "ab", "c": "empty"}, load, {"d": _fake("d")})
    assert list(commands) == ["a", "b", "c", "d"] and len(commands) == 4
    assert "c" in commands and "x" not in commands and loads == []
    assert commands.get("x") is None and loads == []
    assert commands["b"].name == "b" and commands["a"].name == "a" and loads == ["ab"]
    assert commands["d"].name == "d"
    with pytest.raises(RuntimeError, match="did not register 'c'"):
        commands.get("c")  # a loader that forgets a command is a bug, not "no such command"
    commands["e"] = _fake("e")
    del commands["a"]
    assert list(commands) == ["b", "c", "d", "e"] and commands["e"].name == "e"


_RESOLVING = ("smtpconn.dns", "dns", "asyncio", "ssl", "importlib.metadata")


def _heavy_modules_after(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    code = (
        "import sys\n"
        "from smtpconn.cli.app import main\n"
        f"sys.argv = ['smtpconn', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\n"
        f"print(code, *sorted(m for m in sys.modules if m.split('.')[0] in {_RESOLVING!r}"
        f" or m in {_RESOLVING!r}), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    code_text, *modules = done.stderr.splitlines()[-1].split()
    return int(code_text), modules


def test_a_command_that_resolves_nothing_loads_no_dns(tmp_path: Path) -> None:
    env = {**os.environ, "SMTPCONN_RESOLVER": " , "}
    code, loaded = _heavy_modules_after(["list", "--profile", str(tmp_path / "none.toml")], env)
    assert code == 2  # no profile there
    assert loaded == []


@pytest.mark.parametrize(
    ("args", "resolver", "message"),
    [
        ([], "mail.example.com", "error: SMTPCONN_RESOLVER 'mail.example.com' must be an IP"),
        (["--resolver", "ns.example"], "", "error: --resolver 'ns.example' must be an IP"),
    ],
)
def test_resolvers_are_still_checked_before_anything_runs(
    cli: CliInvoker, workdir: Path, args: list[str], resolver: str, message: str
) -> None:
    result = cli(*args, "list", env={"SMTPCONN_RESOLVER": resolver})
    assert result.exit_code == 2
    assert message in result.stderr
