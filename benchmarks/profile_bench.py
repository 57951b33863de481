"""Profile edits at scale: ``add-address``, ``remove-address`` and ``list`` against profiles of
1, 100, 1,000 and 3,000 addresses, each a fresh ``smtpconn`` process as a user runs it.

The generated profile looks like one an administrator keeps: a header comment, a ``[relay]``
table, and addresses alternating bidirectional (with an inbound login) and outbound-only, one in
ten with a comment of its own. Every sample starts from a fresh copy of the same file, so a
remove never finds the profile a previous add left. The inbound password hash is computed once
and shared (scrypt per address would only slow the generator down, the edit does not care).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.measure import VENV_BIN, median, ratio, run_timed

SIZES = (1, 100, 1000, 3000)
QUICK_SIZES = (1, 100)


def profile_text(n: int, password_hash: str) -> str:
    """A profile of ``n`` addresses, with the comments and layout a person leaves behind."""
    parts = [
        "# Support addresses of the ACME help desk. Ask the mail team before editing.\n",
        "version = 1\n\n",
        '[relay]\nhostname = "relay.helpdesk.test"  # the name our MX points at\n\n',
        '[relay.sink]\nkind = "maildir"\npath = "/var/spool/helpdesk"\n',
    ]
    for i in range(n):
        comment = f"# department {i // 10}: owner ops-{i}@example.com\n" if i % 10 == 0 else ""
        parts.append(
            f"\n{comment}[[addresses]]\n"
            f'address = "support{i}@dept{i % 97}.example.com"\n'
            f'mode = "{"bidirectional" if i % 2 == 0 else "outbound-only"}"\n'
            'workflow = "authenticated"\n\n'
            "[addresses.outbound]\n"
            f'host = "mail.dept{i % 97}.example.com"\nport = 587\nsecurity = "starttls"\n'
            f'auth = "auto"\nusername = "helpdesk{i}"\nsecret = "env:BENCH_SECRET"\n'
        )
        if i % 2 == 0:
            parts.append(
                "\n[addresses.inbound]\n"
                f'username = "in{i}@dept{i % 97}.example.com"\n'
                f'password_hash = "{password_hash}"\n'
            )
    return "".join(parts)


IMPORT_ROWS = 1000


def import_csv(rows: int) -> str:
    """``rows`` new outbound-only addresses for ``smtpconn import`` (bidirectional rows would
    measure scrypt, 80 ms of CPU per new inbound password by design)."""
    lines = ["address,mode,server,username,secret\n"]
    lines += [
        f"bulk{i}@import.example.com,outbound-only,mail.import.example.com,helpdesk,env:BENCH_SECRET\n"
        for i in range(rows)
    ]
    return "".join(lines)


def _commands(profile: Path, n: int) -> dict[str, list[str]]:
    smtpconn = str(VENV_BIN / "smtpconn")
    common = ["--profile", str(profile)]
    return {
        "add": [
            smtpconn,
            "add-address",
            "new-address@bench.example.com",
            "--mode",
            "outbound-only",
            "--server",
            "mail.bench.example.com",
            "--username",
            "helpdesk",
            "--secret",
            "env:BENCH_SECRET",
            *common,
        ],
        "remove": [
            smtpconn,
            "remove-address",
            f"support{n - 1}@dept{(n - 1) % 97}.example.com",
            *common,
        ],
        "list": [smtpconn, "list", *common],
        "import": [smtpconn, "import", str(profile.with_name("rows.csv")), *common],
    }


def _sample(template: str, argv_for: dict[str, list[str]], name: str, tmp: Path) -> float:
    profile = tmp / "smtpconn.toml"
    profile.write_text(template)
    profile.chmod(0o600)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "BENCH_SECRET": "x"}
    timed = run_timed(argv_for[name], env=env, cwd=tmp)
    if timed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv_for[name])} exited {timed.returncode}: {timed.stderr.decode()[-500:]}"
        )
    return timed.wall


def run(quick: bool = False, repeat: int = 3) -> dict[str, Any]:
    from smtpconn.profile.secrets import hash_password

    password_hash = hash_password("bench-password-not-used")
    tmp = Path(tempfile.mkdtemp(prefix="smtpconn-bench-profile-"))
    (tmp / "rows.csv").write_text(import_csv(100 if quick else IMPORT_ROWS))
    try:
        runs = []
        for n in QUICK_SIZES if quick else SIZES:
            template = profile_text(n, password_hash)
            argv_for = _commands(tmp / "smtpconn.toml", n)
            row: dict[str, Any] = {"addresses": n, "bytes": len(template)}
            for name in argv_for:
                _sample(template, argv_for, name, tmp)  # warm-up: page cache, .pyc files
                samples = [_sample(template, argv_for, name, tmp) for _ in range(repeat)]
                row[name] = {"median_s": round(median(samples), 3), "min_s": round(min(samples), 3)}
            runs.append(row)
        base = runs[0]
        for row in runs:
            for name in ("add", "remove", "list", "import"):
                row[name]["ratio_to_n1"] = ratio(row[name]["median_s"], base[name]["median_s"])
        return {"repeat": repeat, "import_rows": 100 if quick else IMPORT_ROWS, "runs": runs}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
