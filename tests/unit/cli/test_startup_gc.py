"""The cyclic collector at start-up (smtpconn/cli/app.py) and around verify
(smtpconn/cli/verify.py:_no_cyclic_gc): off while the CLI loads and while verify runs, back on
for a caller that runs commands in-process, left off only when the process ends with the command.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from tests.conftest import CliInvoker


def test_the_collector_is_back_on_after_verify_in_process(cli: CliInvoker, workdir: Path) -> None:
    assert gc.isenabled()
    result = cli("verify", "--profile", str(workdir / "missing.toml"))
    assert result.exit_code == 2  # no profile: refused inside the collector-free block
    assert gc.isenabled()


def _collector_state(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_app_leaves_the_collector_as_it_found_it() -> None:
    assert _collector_state("import gc, smtpconn.cli.app; print(gc.isenabled())") == "True"
    code = "import gc; gc.disable(); import smtpconn.cli.app; print(gc.isenabled())"
    assert _collector_state(code) == "False"


def test_collections_during_start_up_are_few() -> None:
    code = (
        "import gc\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(1) if phase == 'start' else None)\n"
        "import smtpconn.cli.app\n"
        "print(len(runs), gc.get_freeze_count())"
    )
    count, frozen = _collector_state(code).split()
    assert int(count) < 5, count  # ~30 with the collector on during typer's import
    # Importing freezes nothing: a caller's heap (a test run, a benchmark) is not the CLI's.
    assert frozen == "0"


def test_the_console_entry_point_freezes_what_the_imports_built() -> None:
    code = (
        "import gc, sys\n"
        "from smtpconn.cli import app\n"
        "sys.argv = ['smtpconn', '--version']\n"
        "try:\n"
        "    app.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_freeze_count() > 10000)"
    )
    assert _collector_state(code).splitlines()[-1] == "True"
