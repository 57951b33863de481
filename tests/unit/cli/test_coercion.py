"""The plain-value shortcut (smtpconn/cli/coercion.py) gives exactly what typer's own pydantic
coercion gives, for every option of every command, and leaves everything else to typer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import typer
from typer._coercion import build_runtime_param
from typer.main import get_command

from smtpconn.cli import coercion
from smtpconn.cli.app import app

SAMPLES: dict[Any, tuple[Any, ...]] = {
    str: ("x", "", "süpport@example.test", " 12 "),
    int: ("0", "25", "007", "-1", "1.5", "x"),
    float: ("10", "0.5", "3.", "1e3", "-2", "nan", "x"),
    Path: ("profile.toml", ".", "/nonexistent/dir/file", "-"),
}


def _params() -> list[tuple[str, Any, Any]]:
    root = get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    found = [("(main)", root, p) for p in root.params]
    for name, command in root.commands.items():
        found += [(name, command, p) for p in command.params]
        for sub_name, sub in getattr(command, "commands", {}).items():
            found += [(f"{name} {sub_name}", sub, p) for p in sub.params]
    return found


def _typers(value: Any, param: Any, ctx: Any) -> Any:
    try:
        return build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # typer's answer for a bad value: the shortcut must not give one
        return type(exc)


def _samples(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) is list:
        inner = SAMPLES.get(get_args(annotation)[0], ("x",))
        return ((), tuple(inner[:2]), list(inner[:1]))
    return SAMPLES.get(annotation, ("x", "1"))


@pytest.mark.parametrize(("where", "command", "param"), _params(), ids=lambda v: str(v)[:40])
def test_shortcut_equals_typer(where: str, command: Any, param: Any) -> None:
    ctx = typer.Context(command)
    for value in (None, *_samples(param.type_descriptor.annotation)):
        plain = coercion.plain_value(param, value, ctx)
        if plain is coercion._NOT_PLAIN:
            continue
        expected = _typers(value, param, ctx)
        assert plain == expected, (where, param.name, value)
        assert type(plain) is type(expected), (where, param.name, value)


def test_some_values_are_left_to_typer() -> None:
    param = next(p for _, _, p in _params() if p.name == "timeout")
    ctx = typer.Context(get_command(app))
    assert coercion.plain_value(param, "1e3", ctx) is coercion._NOT_PLAIN
    assert coercion.plain_value(param, "10", ctx) == 10.0


def test_installed_and_pydantic_not_needed_for_plain_values() -> None:
    from typer.core import _TyperParameter

    assert getattr(_TyperParameter.get_runtime_param, "smtpconn_plain_first", False)
