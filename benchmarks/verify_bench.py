"""verify fan-out: ``smtpconn verify`` over N support addresses on N domains, next to checkdmarc.

Set-up (once, for the largest N): an NSD serving N generated copies of the lab's good domain
(``benchmarks.zonegen``) behind a latency proxy (25 ms each way, UDP and TCP), and two more
proxies of the same kind in front of the lab's Postfix: its submission port (the outbound server
smtpconn checks: STARTTLS, certificate, AUTH) and its port-25-style ``mx`` listener (the MX host
checkdmarc probes for STARTTLS). Every tool sees only the proxies, never a server directly.

For each N: the wall time of ``smtpconn verify --json`` (a fresh process, as a user runs it) over
a profile with the first N addresses, its ratio to N = 1, and the wall time of checkdmarc over the
same N domains and nameserver (``benchmarks.checkdmarc_driver``: MX + STARTTLS, SPF, DMARC, the
checks both tools make), and the ratio between the two. Peak RSS of both comes with each run.
"""

from __future__ import annotations

import compileall
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.latency_proxy import LatencyProxy
from benchmarks.measure import REPO, VENV_BIN, ratio, run_timed
from benchmarks.zonegen import BenchNsd, domain_names

SIZES = (1, 30, 300)
QUICK_SIZES = (1, 2)

#: Dependent round trips on verify's critical path for one address (benchmarks/README.md, "The
#: latency floor"): the TLS/AUTH session to the outbound server, the longest chain of a run.
#: A+AAAA of the server (asked together) 1, TCP handshake 1, banner 1, EHLO 1, STARTTLS 1,
#: TLS 1.3 handshake 1, EHLO 1, AUTH PLAIN (initial response) 1; QUIT is sent, not waited for.
#: Every DNS family's chain is shorter (at most 3: TXT -> MX -> A in SPF's `mx`).
CRITICAL_PATH_ROUND_TRIPS = 8
FLOOR_SAMPLES = 3  # N = 1 at the RTT and at twice it, interleaved, median of each


@dataclass
class VerifySetup:
    directory: Path
    names: list[str]
    dns: LatencyProxy
    submission: LatencyProxy
    mx: LatencyProxy
    ca_file: str
    user: str
    password: str
    dkim_key: str


def write_profile(setup: VerifySetup, n: int) -> Path:
    parts = ['version = 1\n\n[connector]\nname = "benchmark"\n']
    for name in setup.names[:n]:
        parts.append(
            f"""
[[addresses]]
address = "support@{name}"
mode = "outbound-only"
workflow = "authenticated"

[addresses.outbound]
host = "mail.good.test"
port = {setup.submission.port}
security = "starttls"
auth = "auto"
username = "{setup.user}"
secret = "env:BENCH_SMTP_PASSWORD"

[addresses.dkim]
selector = "sel2048"
private_key = "{setup.dkim_key}"
"""
        )
    path = setup.directory / f"profile-{n}.toml"
    path.write_text("".join(parts))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def verify_setup(lab: Any, max_n: int, delay: float) -> Iterator[VerifySetup]:
    st = lab.state
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-bench-verify-"))
    directory.chmod(0o755)  # NSD reads its zone files as whatever user it runs as
    names = domain_names(max_n)
    nsd = BenchNsd(directory / "dns", {n: k.public_der for n, k in lab.dkim_keys.items()}, names)
    nsd.start()
    try:
        with (
            LatencyProxy((nsd.host, nsd.port), delay=delay) as dns,
            LatencyProxy(("127.0.0.1", st.ports["submission"]), delay=delay, udp=False) as sub,
            LatencyProxy(("127.0.0.1", st.ports["mx"]), delay=delay, udp=False) as mx,
        ):
            yield VerifySetup(
                directory,
                names,
                dns,
                sub,
                mx,
                st.ca_file,
                st.user,
                st.password,
                st.dkim_keys["main"]["path"],
            )
    finally:
        nsd.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run_smtpconn(setup: VerifySetup, n: int) -> dict[str, Any]:
    profile = write_profile(setup, n)
    env = {**os.environ, "BENCH_SMTP_PASSWORD": setup.password, "NO_COLOR": "1"}
    for var in ("SMTPCONN_RESOLVER", "SMTPCONN_CA_FILE", "SMTPCONN_PROFILE"):
        env.pop(var, None)
    argv = [
        str(VENV_BIN / "smtpconn"),
        "verify",
        "--json",
        "--profile",
        str(profile),
        "--resolver",
        setup.dns.address,
        "--ca-file",
        setup.ca_file,
        "--timeout",
        "10",
        "--deadline",
        "600",
    ]
    t = run_timed(argv, env=env, cwd=setup.directory, timeout=900)
    out: dict[str, Any] = {
        "wall_s": round(t.wall, 3),
        "max_rss_kib": t.max_rss_kib,
        "exit": t.returncode,
    }
    try:
        report = json.loads(t.stdout)
        out["summary"] = report.get("summary")
        out["addresses"] = len(report.get("addresses", []))
    except json.JSONDecodeError:
        out["error"] = (t.stderr or t.stdout).decode(errors="replace")[-500:]
    return out


def checkdmarc_installed() -> bool:
    return importlib.util.find_spec("checkdmarc") is not None


def run_checkdmarc(setup: VerifySetup, n: int) -> dict[str, Any]:
    if not checkdmarc_installed():
        return {"wall_s": None, "error": "checkdmarc is not installed: pip install -e '.[bench]'"}
    env = {**os.environ, "SSL_CERT_FILE": setup.ca_file}  # trust the lab CA for STARTTLS
    argv = [
        str(VENV_BIN / "python"),
        "-m",
        "benchmarks.checkdmarc_driver",
        "--nameserver",
        setup.dns.address,
        "--smtp-port",
        str(setup.mx.port),
        *setup.names[:n],
    ]
    t = run_timed(argv, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=900)
    out: dict[str, Any] = {
        "wall_s": round(t.wall, 3),
        "max_rss_kib": t.max_rss_kib,
        "exit": t.returncode,
    }
    try:
        out["valid"] = json.loads(t.stdout.decode().strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        out["error"] = t.stderr.decode(errors="replace")[-500:]
    return out


def extrapolate(rows: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """checkdmarc's time at ``n`` from its two smallest measured sizes.

    check_domains works through domains strictly one after another with the same queries for
    each, so its time is a start-up cost plus a per-domain cost: a straight line.
    """
    (n1, t1), (n2, t2) = [(r["n"], r["checkdmarc"]["wall_s"]) for r in rows[:2]]
    per_domain = (t2 - t1) / (n2 - n1)
    return {
        "wall_s": round(t1 + per_domain * (n - n1), 3),
        "estimated": True,
        "method": f"linear from N={n1} and N={n2} ({per_domain:.3f} s per domain); "
        "measure it with --full-peer",
    }


def python_pass_s(samples: int = 5) -> float:
    """``python -c pass``: the start-up no Python program can avoid (median)."""
    walls = [run_timed([str(VENV_BIN / "python"), "-c", "pass"]).wall for _ in range(samples)]
    return statistics.median(walls)


def measure_floor(setup: VerifySetup, delay: float, samples: int) -> dict[str, Any]:
    """verify N = 1 against its latency floor (critical-path round trips x RTT + ``python -c
    pass``), and the round trips it actually waits for, one after another: the time one more RTT
    adds to N = 1 (the same run through proxies adding twice the delay), divided by the RTT.
    Against a run without added latency the difference would undercount: there, the CPU work
    that the waits otherwise hide is exposed."""
    rtt = 2 * delay
    with contextlib.ExitStack() as stack:
        doubled = dataclasses.replace(
            setup,
            dns=stack.enter_context(LatencyProxy(setup.dns.target, delay=2 * delay)),
            submission=stack.enter_context(
                LatencyProxy(setup.submission.target, delay=2 * delay, udp=False)
            ),
        )
        base: list[float] = []
        slower: list[float] = []
        for _ in range(samples):
            base.append(run_smtpconn(setup, 1)["wall_s"])
            slower.append(run_smtpconn(doubled, 1)["wall_s"])
    python_s = python_pass_s()
    floor = CRITICAL_PATH_ROUND_TRIPS * rtt + python_s
    n1, n1_doubled = statistics.median(base), statistics.median(slower)
    return {
        "critical_path_round_trips": CRITICAL_PATH_ROUND_TRIPS,
        "rtt_s": rtt,
        "python_c_pass_s": round(python_s, 4),
        "floor_s": round(floor, 3),
        "n1_s": round(n1, 3),
        "n1_doubled_rtt_s": round(n1_doubled, 3),
        "n1_ratio_to_floor": ratio(n1, floor),
        "measured_round_trips": round((n1_doubled - n1) / rtt, 1),
    }


def run(lab: Any, quick: bool, delay: float = 0.025, full_peer: bool = False) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else SIZES
    rows: list[dict[str, Any]] = []
    with verify_setup(lab, max(sizes), delay) as setup:
        # As users run it: byte-compiled (a shell with PYTHONDONTWRITEBYTECODE=1 would otherwise
        # compile every smtpconn module in every timed run).
        compileall.compile_dir(str(REPO / "smtpconn"), quiet=1)
        floor = measure_floor(setup, delay, 1 if quick else FLOOR_SAMPLES)
        for n in sizes:
            s = run_smtpconn(setup, n)
            measured = full_peer or len(rows) < 2 or not checkdmarc_installed()
            c = run_checkdmarc(setup, n) if measured else extrapolate(rows, n)
            rows.append({"n": n, "smtpconn": s, "checkdmarc": c})
        proxy_stats = {
            "dns": setup.dns.stats.as_dict(),
            "submission": setup.submission.stats.as_dict(),
            "mx": setup.mx.stats.as_dict(),
        }
    base = rows[0]["smtpconn"]["wall_s"]
    for row in rows:
        row["ratio_to_n1"] = ratio(row["smtpconn"]["wall_s"], base)
        # > 1 means smtpconn is that many times faster than checkdmarc.
        peer = row["checkdmarc"]["wall_s"]
        row["speedup_vs_checkdmarc"] = (
            ratio(peer, row["smtpconn"]["wall_s"]) if peer is not None else None
        )
    return {
        "delay_ms_each_way": delay * 1000,
        "floor": floor,
        "runs": rows,
        "proxy_stats": proxy_stats,
    }
