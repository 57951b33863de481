"""Option values that need no conversion skip typer's pydantic coercion.

typer (0.2x) coerces every option value, given or not, through a pydantic ``TypeAdapter`` built
on first use. Importing pydantic and building the adapters cost ~0.2 s of every command's
start-up (``smtpconn verify --help`` took 0.3 s against 0.03 s for ``python -c pass``;
``python -X importtime``: pydantic 130 ms, the adapters 64 ms), more than verify's own work at
N = 1 behind a 50 ms RTT. The values our options take are plain: an absent option, a string, a
list of strings, a decimal number, a path. Those are converted here to exactly what typer's
adapter returns (paths still go through typer's own checks: ``coerce_cli_path``); anything else
(an enum, a bound, a value that does not parse) goes to typer's adapter, so its results and
error messages stay typer's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

_NOT_PLAIN = object()
_DIGITS = re.compile(r"[0-9]{1,18}")
_DECIMAL = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")


def _no_bounds(info: Any) -> bool:
    return info.min is None and info.max is None and not info.clamp and info.parser is None


def _scalar(annotation: Any, info: Any, value: Any, param: Any, ctx: Any) -> Any:
    """``value`` converted as typer's adapter would, or ``_NOT_PLAIN``."""
    if not isinstance(value, str) or info.parser is not None:
        return _NOT_PLAIN
    if annotation is str:
        return value
    if annotation is int and _no_bounds(info) and _DIGITS.fullmatch(value):
        return int(value)
    if annotation is float and _no_bounds(info) and _DECIMAL.fullmatch(value):
        return float(value)
    path_type = info.path_type or annotation
    if annotation is Path and path_type is Path:
        from typer._param_types import coerce_cli_path

        # Given a Path, typer's own check skips the pydantic conversion (Path(value)) only.
        return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
    return _NOT_PLAIN


def plain_value(param: Any, value: Any, ctx: Any) -> Any:
    descriptor = param.type_descriptor
    if descriptor.file_annotation is not None:
        return _NOT_PLAIN
    annotation, info = descriptor.annotation, descriptor.parameter_info
    if value is None:  # typer's RuntimeParam.coerce, before any adapter
        return () if param.multiple or param.nargs == -1 else None
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
        return _NOT_PLAIN
    return _scalar(annotation, info, value, param, ctx)


class _PlainFirst:
    """Stands in for typer's runtime parameter; builds the real one only when needed."""

    def __init__(self, param: Any) -> None:
        self._param = param
        self._real: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        plain = plain_value(param, value, ctx)
        if plain is not _NOT_PLAIN:
            return plain
        if self._real is None:
            from typer._coercion import build_runtime_param

            self._real = build_runtime_param(self._param.type_descriptor)
        return self._real.coerce(value, param=param, ctx=ctx)


def install() -> None:
    """Patch typer's parameter class once; a typer without that hook is left as it is."""
    try:
        from typer._coercion import build_runtime_param  # noqa: F401  (the fallback needs it)
        from typer.core import _TyperParameter
    except ImportError:
        return
    original = getattr(_TyperParameter, "get_runtime_param", None)
    if original is None or getattr(original, "smtpconn_plain_first", False):
        return

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            self._runtime_param = _PlainFirst(self)
        return self._runtime_param

    get_runtime_param.smtpconn_plain_first = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
