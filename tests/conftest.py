"""Shared test helpers: run the real CLI (in-process through typer's runner, or as a process)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smtpconn.cli.app import app


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


CliInvoker = Callable[..., CliResult]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch folder as the current directory, so the default ./smtpconn.toml lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMTPCONN_PROFILE", raising=False)
    monkeypatch.delenv("SMTPCONN_RESOLVER", raising=False)
    monkeypatch.delenv("SMTPCONN_CA_FILE", raising=False)
    monkeypatch.delenv("SMTPCONN_BLOCKLISTS", raising=False)
    yield tmp_path


@pytest.fixture
def cli() -> CliInvoker:
    """Invoke the smtpconn app in-process, as the console script would."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> CliResult:
        result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke


def run_smtpconn(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> CliResult:
    """Run ``python -m smtpconn`` as a separate process (for concurrency and crash tests)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "smtpconn", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
