"""The benchmark harness itself works: tiny inputs through every section, against the real lab.

Speed targets are never asserted here (they are reported by ``python -m benchmarks``); only that
each section ran, produced the expected keys and positive numbers, and wrote its JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import collect, write
from benchmarks.report import render_table
from benchmarks.verify_bench import checkdmarc_installed
from lab.lab import Lab

pytestmark = pytest.mark.integration


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


def test_quick_run_writes_complete_results(lab: Lab, tmp_path: Path) -> None:
    results = collect(["startup", "profile", "verify", "relay"], quick=True, lab=lab)
    path = write(results, tmp_path)
    data = json.loads(path.read_text())
    assert set(data) >= {"meta", "startup", "profile", "verify", "relay", "targets"}
    assert data["meta"]["quick"] is True

    assert [r["addresses"] for r in data["profile"]["runs"]] == [1, 100]
    for r in data["profile"]["runs"]:
        for name in ("add", "remove", "list", "import"):
            assert _positive(r[name]["median_s"]) and _positive(r[name]["ratio_to_n1"]), name

    for name in ("python_c_pass", "smtpconn_help", "smtpconn_list"):
        assert _positive(data["startup"][name]["median_s"]), name
        assert _positive(data["startup"][name]["ratio_to_python"]), name

    runs = data["verify"]["runs"]
    assert [r["n"] for r in runs] == [1, 2]
    for r in runs:
        assert _positive(r["smtpconn"]["wall_s"])
        assert _positive(r["smtpconn"]["max_rss_kib"]) and _positive(r["ratio_to_n1"])
        # smtpconn really checked the generated domains (not a fast failure).
        assert r["smtpconn"]["addresses"] == r["n"]
        assert r["smtpconn"]["summary"]["pass"] > 0
        if checkdmarc_installed():  # the "bench" extra; scripts/bench installs it
            assert _positive(r["checkdmarc"]["wall_s"])
            assert _positive(r["speedup_vs_checkdmarc"])
            assert r["checkdmarc"]["valid"]["spf_valid"] == r["n"]
        else:
            assert "not installed" in r["checkdmarc"]["error"]
    # Everything went through the latency proxies.
    assert data["verify"]["proxy_stats"]["dns"]["udp_datagrams"] > 0
    assert data["verify"]["proxy_stats"]["submission"]["tcp_connections"] > 0

    for row in data["relay"]["inbound"]:
        for side in ("smtpconn", "postfix"):
            assert row[side]["errors"] == 0, row[side]["first_errors"]
            assert row[side]["sent"] == row[side]["messages"]
            for key in ("accepted_per_s", "delivered_per_s", "p50_ms", "p99_ms"):
                assert _positive(row[side][key]), (side, key)
        assert _positive(row["delivered_ratio"])
        assert row["rounds"] == len(row["delivered_ratios"]) == 1
    out = data["relay"]["outbound"]
    assert _positive(out["smtpconn"]["delivered_per_s"])
    assert _positive(out["postfix_direct"]["delivered_per_s"])
    # The peer doing the relay's job: a second Postfix that relayed every reply (checked by
    # the harness against its log and the lab's Maildir) without errors.
    assert out["postfix_relay"]["errors"] == 0, out["postfix_relay"]["first_errors"]
    assert _positive(out["postfix_relay"]["delivered_per_s"]) and _positive(out["relay_ratio"])
    assert out["postfix_relay_settings"]["smtp_tls_security_level"] == "encrypt"
    mem = data["relay"]["memory"]
    assert mem["smtpconn"]["greeted"] == mem["idle_connections"]
    assert _positive(mem["smtpconn"]["peak_rss_kib"]) and _positive(mem["postfix"]["pss_kib"])

    assert "verify fan-out" in render_table(data)
    # The lab's test password never lands in the results file.
    assert lab.user.password not in path.read_text()
