"""``python -m benchmarks``: run the benchmarks, print a table, write a JSON results file.

    python -m benchmarks                      # everything (a few minutes on 2 cores)
    python -m benchmarks --only startup,verify
    python -m benchmarks --quick              # tiny inputs: checks the harness itself works
    python -m benchmarks --full-peer          # run checkdmarc over all 300 domains too
    python -m benchmarks --only relay --rounds 9   # more interleaved rounds per inbound scenario

Needs root and the lab's programs (NSD, Postfix, Dovecot): scripts/install-system-deps.
Results: benchmarks/results/<UTC timestamp>.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.measure import REPO
from benchmarks.report import render_table, targets

if TYPE_CHECKING:
    from lab.lab import Lab

SECTIONS = ("startup", "profile", "verify", "relay")


def _git_commit() -> str:
    res = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip() or "unknown"


def meta(quick: bool) -> dict[str, Any]:
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "quick": quick,
    }


def collect(
    sections: list[str],
    quick: bool,
    full_peer: bool = False,
    lab: Lab | None = None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """Run the sections; the lab servers are started here unless a running ``lab`` is given."""
    results: dict[str, Any] = {"meta": meta(quick)}
    started = time.monotonic()
    if "startup" in sections:
        from benchmarks import startup

        results["startup"] = startup.run(repeat=3 if quick else 40)
    if "profile" in sections:
        from benchmarks import profile_bench

        results["profile"] = profile_bench.run(quick, repeat=1 if quick else 3)
    if "verify" in sections or "relay" in sections:
        with contextlib.ExitStack() as stack:
            if lab is None:
                from lab.lab import Lab

                lab = stack.enter_context(Lab())
            if "verify" in sections:
                from benchmarks import verify_bench

                results["verify"] = verify_bench.run(lab, quick, full_peer=full_peer)
            if "relay" in sections:
                from benchmarks import relay_bench

                results["relay"] = relay_bench.run(lab, quick, rounds)
    results["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = targets(results)
    return results


def write(results: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections: {', '.join(SECTIONS)}",
    )
    ap.add_argument("--quick", action="store_true", help="tiny inputs (harness smoke test)")
    ap.add_argument(
        "--full-peer",
        action="store_true",
        help="measure checkdmarc at every N instead of extrapolating the largest",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        metavar="K",
        help="interleaved relay/Postfix rounds per inbound relay scenario (default 5, 1 with "
        "--quick); the ratio reported is the median of the rounds'",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s): {', '.join(unknown)}")
    if args.rounds is not None and args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if ("verify" in sections or "relay" in sections) and os.geteuid() != 0:
        print(
            "error: the verify and relay benchmarks start NSD, Postfix and Dovecot, which "
            "needs root (or run --only startup,profile)",
            file=sys.stderr,
        )
        return 2
    results = collect(sections, args.quick, args.full_peer, rounds=args.rounds)
    path = write(results, args.out)
    print(render_table(results))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
