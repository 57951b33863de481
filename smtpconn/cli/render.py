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
    from collections.abc import Sequence
    from pathlib import Path

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


def report_dry_run(
    profile: Path,
    old_text: str,
    new_text: str,
    *,
    json_output: bool,
    warnings: Sequence[str] = (),
    new_hashes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """What an edit would change in the profile, as a unified diff (``--dry-run``). Hashes of
    throwaway passwords are shown as ``<new scrypt hash>``: they would only confuse."""
    import difflib

    for password_hash in new_hashes:
        new_text = new_text.replace(password_hash, "<new scrypt hash>")
    diff = "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"{profile} (now)",
            tofile=f"{profile} (after)",
        )
    )
    for message in warnings:
        warn(message)
    if json_output:
        document = {"dry_run": True, "profile": str(profile), **(extra or {})}
        print_json({**document, "diff": diff, "warnings": list(warnings)})
        return
    out = console()
    out.print(f"[bold]Dry run:[/] nothing was written to {escape(str(profile))}.")
    for line in diff.splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
        out.print(f"[{style}]{escape(line)}[/]" if style else escape(line), soft_wrap=True)
