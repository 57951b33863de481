"""Small measuring helpers shared by the benchmarks: timed child processes (wall time and peak
RSS from the kernel's own accounting), percentiles and ratios that never divide by zero."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"


@dataclass(frozen=True)
class Timed:
    wall: float  # seconds
    max_rss_kib: int  # peak resident set of the child (wait4's ru_maxrss)
    returncode: int
    stdout: bytes
    stderr: bytes


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> Timed:
    """Run a program to completion: wall time from spawn to exit, and its peak RSS.

    The child is reaped with ``os.wait4``, which returns the kernel's own ``ru_maxrss`` for it
    (not its grandchildren's), so no sampling can miss the peak.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    # Read the pipes in threads so a chatty child never blocks; reap with wait4 for its rusage.
    chunks: dict[str, bytes] = {}

    def drain(name: str, stream: IO[bytes]) -> None:
        chunks[name] = stream.read()

    threads = [
        threading.Thread(target=drain, args=("out", proc.stdout), daemon=True),
        threading.Thread(target=drain, args=("err", proc.stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise subprocess.TimeoutExpired(list(argv), timeout)
        time.sleep(0.002)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join(10)
    return Timed(
        wall, usage.ru_maxrss, proc.returncode, chunks.get("out", b""), chunks.get("err", b"")
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); no interpolation between samples."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is zero (reported as "n/a", never as infinity)."""
    return round(a / b, 3) if b else None


def rss_kib(pid: int) -> dict[str, int]:
    """Current and peak resident set of a live process (VmRSS / VmHWM), in KiB."""
    out = {"rss_kib": 0, "hwm_kib": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                out["hwm_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size (shared pages divided among their users), in KiB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
