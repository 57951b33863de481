"""CLI start-up: ``smtpconn --help`` and ``smtpconn list`` against ``python -c pass``.

Each command runs ``repeat`` times, interleaved (so a burst of background load hits all of them
alike), after one warm-up run each (so the page cache holds the files, as it does for a user who
runs the tool twice). The median wall time is reported with its ratio to ``python -c pass``,
which is the floor any Python CLI pays. ``checkdmarc --help`` runs alongside as a peer CLI.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.measure import VENV_BIN, median, ratio, run_timed

PROFILE_TEXT = """version = 1

[[addresses]]
address = "support@good.test"
mode = "outbound-only"
workflow = "authenticated"

[addresses.outbound]
host = "mail.good.test"
port = 587
username = "alice@good.test"
secret = "env:BENCH_SMTP_PASSWORD"
"""


def commands(profile: Path) -> dict[str, list[str]]:
    py = str(VENV_BIN / "python")
    smtpconn = str(VENV_BIN / "smtpconn")
    cmds = {
        "python_c_pass": [py, "-c", "pass"],
        "smtpconn_help": [smtpconn, "--help"],
        "smtpconn_list": [smtpconn, "list", "--profile", str(profile)],
    }
    checkdmarc = VENV_BIN / "checkdmarc"
    if checkdmarc.exists():
        cmds["checkdmarc_help"] = [str(checkdmarc), "--help"]
    return cmds


def run(repeat: int = 30) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="smtpconn-bench-startup-"))
    try:
        profile = tmp / "smtpconn.toml"
        profile.write_text(PROFILE_TEXT)
        profile.chmod(0o600)
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
        cmds = commands(profile)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        rss: dict[str, int] = {}
        for argv in cmds.values():
            warm = run_timed(argv, env=env, cwd=tmp)
            if warm.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(argv)} exited {warm.returncode}: {warm.stderr.decode()[-500:]}"
                )
        for _ in range(repeat):
            for name, argv in cmds.items():
                t = run_timed(argv, env=env, cwd=tmp)
                samples[name].append(t.wall)
                rss[name] = max(rss.get(name, 0), t.max_rss_kib)
        base = median(samples["python_c_pass"])
        out: dict[str, Any] = {"repeat": repeat}
        for name, values in samples.items():
            out[name] = {
                "median_s": round(median(values), 4),
                "min_s": round(min(values), 4),
                "max_rss_kib": rss[name],
                "ratio_to_python": ratio(median(values), base),
            }
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def imported_modules(argv_tail: list[str]) -> list[str]:
    """Top-level packages imported by ``smtpconn <argv_tail>`` (to spot heavy imports)."""
    import subprocess

    code = (
        "import sys\n"
        "from smtpconn.cli.app import main\n"
        f"sys.argv = ['smtpconn', *{argv_tail!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
    )
    res = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    return res.stderr.split()


if __name__ == "__main__":
    import json

    print(json.dumps(run(10), indent=2))
    print(imported_modules(["--help"]))
