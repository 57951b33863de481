"""The library as a user calls it, checked by mypy --strict (``[tool.mypy] files`` in
pyproject.toml): load a profile, run verify, build and run a relay, catch the library's errors.

Nothing here runs against a server; ``tests/unit/test_surface.py`` imports it so a name that
moves breaks the suite as well as the type check.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import smtpconn
from smtpconn.checks.report import VerifyReport
from smtpconn.checks.verify import select_entries, verify_profile
from smtpconn.errors import ExitCode, SinkError, SmtpconnError, SmtpFailure, UsageError
from smtpconn.profile.store import load_profile
from smtpconn.relay.config import RelayConfig, build_config, check_config
from smtpconn.relay.runtime import Relay
from smtpconn.settings import Settings


def verify_file(path: Path, *addresses: str) -> VerifyReport:
    loaded = load_profile(path)
    settings = Settings(profile_path=path, timeout=5.0)
    return verify_profile(settings, loaded.base_dir, select_entries(loaded.profile, addresses))


def verify_exit_code(path: Path) -> int:
    try:
        report = verify_file(path)
    except SmtpconnError as error:  # the one root: bad profile, unreachable resolver, ...
        print(error.message, error.fix or "")
        return int(error.exit_code)
    return int(report.exit_code(strict=True))


def relay_config(path: Path) -> RelayConfig | None:
    loaded = load_profile(path)
    try:
        config = build_config(loaded.profile, loaded.base_dir)
    except UsageError as error:
        print(f"cannot relay: {error}")
        return None
    problems: list[str] = check_config(config)
    return None if problems else config


async def run_relay_briefly(path: Path, seconds: float) -> tuple[int, int]:
    relay = Relay.from_profile_file(path)
    async with relay:
        await asyncio.sleep(seconds)
        return relay.inbound_port, relay.submission_port


def describe(error: smtpconn.SmtpconnError) -> str:
    if isinstance(error, SmtpFailure):
        return f"{error.stage}: {error.kind} (permanent={error.permanent})"
    if isinstance(error, SinkError):
        return f"sink: {error.message} (permanent={error.permanent})"
    code: ExitCode = error.exit_code
    return f"{error} (exit {int(code)})"
