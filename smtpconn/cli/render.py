"""Output helpers: rich consoles that respect --no-color and pipes, and JSON on stdout.

Human output goes to stdout unless --json is set, in which case stdout carries exactly one JSON
document and everything else (warnings, progress) goes to stderr.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _no_color() -> bool:
    return "--no-color" in sys.argv[1:] or "NO_COLOR" in os.environ


@cache
def console() -> Console:
    from rich.console import Console

    return Console(no_color=_no_color(), highlight=False)


@cache
def error_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, no_color=_no_color(), highlight=False)


def print_json(document: Any) -> None:
    import json

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """A warning for people; on stderr so that --json output stays parseable."""
    error_console().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True, markup=True)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
