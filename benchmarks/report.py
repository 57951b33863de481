"""The printed table and the performance targets, both computed from the results dict alone (so an
old results file can be re-rendered: ``python -m benchmarks.report FILE``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [f"\n{title}", line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def render_table(results: dict[str, Any]) -> str:
    parts: list[str] = []
    st = results.get("startup")
    if st:
        rows = [
            [
                name,
                _f(st[name]["median_s"] * 1000, " ms", 1),
                _f(st[name]["ratio_to_python"], "x"),
                _f(st[name]["max_rss_kib"] // 1024, " MiB"),
            ]
            for name in ("python_c_pass", "smtpconn_help", "smtpconn_list", "checkdmarc_help")
            if name in st
        ]
        parts.append(
            _table(
                f"CLI start-up (median of {st['repeat']})",
                ["command", "wall", "vs python -c pass", "peak RSS"],
                rows,
            )
        )
    if results.get("profile"):
        parts.append(_profile_table(results["profile"]))
    ve = results.get("verify")
    if ve:
        rows = []
        for r in ve["runs"]:
            c = r["checkdmarc"]
            rows.append(
                [
                    str(r["n"]),
                    _f(r["smtpconn"]["wall_s"], " s"),
                    _f(r["ratio_to_n1"], "x"),
                    _f(c["wall_s"], " s") + (" (est.)" if c.get("estimated") else ""),
                    _f(r["speedup_vs_checkdmarc"], "x"),
                    _f(r["smtpconn"]["max_rss_kib"] // 1024, " MiB"),
                    _f(c["max_rss_kib"] // 1024, " MiB") if "max_rss_kib" in c else "n/a",
                    _summary(r["smtpconn"].get("summary")),
                ]
            )
        parts.append(
            _table(
                f"verify fan-out (+{ve['delay_ms_each_way']:.0f} ms each way on DNS and SMTP)",
                [
                    "N",
                    "smtpconn",
                    "vs N=1",
                    "checkdmarc",
                    "smtpconn faster by",
                    "smtpconn RSS",
                    "checkdmarc RSS",
                    "smtpconn results",
                ],
                rows,
            )
        )
        if ve.get("floor"):
            parts.append(_floor_line(ve["floor"]))
    re_ = results.get("relay")
    if re_:
        rows = [_inbound_row(r) for r in re_["inbound"]]
        rows += _outbound_rows(re_["outbound"])
        parts.append(
            _table(
                "relay throughput, 10 KB messages, STARTTLS + AUTH (smtpconn / Postfix)",
                ["scenario", "delivered msg/s", "ratio (rounds)", "p50 ms", "p99 ms", "errors"],
                rows,
            )
        )
        m = re_["memory"]
        rows = [
            [
                "smtpconn relay",
                str(m["smtpconn"]["opened"]),
                str(m["smtpconn"]["greeted"]),
                _f(m["smtpconn"]["peak_rss_kib"] // 1024, " MiB (peak RSS)"),
            ],
            [
                "Postfix (all processes)",
                str(m["postfix"]["opened"]),
                str(m["postfix"]["greeted"]),
                _f(m["postfix"]["pss_kib"] // 1024, " MiB (sum of PSS)"),
            ],
        ]
        parts.append(
            _table(
                f"memory with {m['idle_connections']} idle connections",
                ["server", "connected", "greeted", "memory"],
                rows,
            )
        )
        sc = re_.get("memory_at_scale")
        if sc:
            row = [
                f"{sc['addresses']} addresses, {sc['idle_connections']} idle",
                f"{sc['opened']} / {sc['greeted']}",
                _f(sc["rss_ready_kib"] // 1024, " MiB"),
                _f(sc["rss_kib"] // 1024, " MiB"),
                _f(sc["peak_rss_kib"] // 1024, " MiB"),
            ]
            parts.append(
                _table(
                    "relay memory at scale (issue 16 item 5)",
                    ["profile / connections", "connected / greeted", "RSS ready", "RSS", "peak"],
                    [row],
                )
            )
    ts = results.get("targets") or []
    if ts:
        rows = [[t["target"], t["measured"], "yes" if t["met"] else "NO"] for t in ts]
        parts.append(_table("targets", ["target", "measured", "met"], rows))
    return "\n".join(parts)


def _ratio_range(value: float | None, span: list[float | None] | None) -> str:
    if not span or span[0] is None or span[0] == span[1]:
        return _f(value, "x")
    return f"{_f(value, 'x')} ({_f(span[0])}-{_f(span[1])})"


def _inbound_row(r: dict[str, Any]) -> list[str]:
    """One inbound scenario: each server's median over the rounds, the median of the rounds'
    ratios and their range."""
    s, p = r["smtpconn"], r["postfix"]
    rounds = r.get("rounds", 1)
    return [
        f"{r['scenario']}, {rounds} round{'s' if rounds != 1 else ''}",
        f"{_f(s['delivered_per_s'])} / {_f(p['delivered_per_s'])}",
        _ratio_range(r["delivered_ratio"], r.get("delivered_ratio_range")),
        f"{_f(s['p50_ms'])} / {_f(p['p50_ms'])}",
        f"{_f(s['p99_ms'])} / {_f(p['p99_ms'])}",
        f"{s['errors']} / {p['errors']}",
    ]


def _outbound_row(label: str, o: dict[str, Any], peer: str, key: str) -> list[str]:
    s, p = o["smtpconn"], o[peer]
    return [
        label,
        f"{_f(s['delivered_per_s'])} / {_f(p['delivered_per_s'])}",
        _ratio_range(o[key], o.get(key + "_range")),
        f"{_f(s['p50_ms'])} / {_f(p['p50_ms'])}",
        f"{_f(s['p99_ms'])} / {_f(p['p99_ms'])}",
        f"{s['errors']} / {p['errors']}",
    ]


def _inbound_target(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Met when every scenario's median ratio (over its interleaved rounds) is at least 1."""
    worst = min((r["delivered_ratio"] or 0.0 for r in rows), default=0.0)
    parts = [
        f"{r['senders']}x{r['per_session']} "
        + _ratio_range(r["delivered_ratio"], r.get("delivered_ratio_range"))
        for r in rows
    ]
    return {
        "target": "relay throughput >= Postfix (every inbound scenario, median of its rounds)",
        "measured": ", ".join(parts) + f"; worst {worst}x",
        "met": worst >= 1.0,
    }


def _outbound_rows(o: dict[str, Any]) -> list[list[str]]:
    """Outbound: against Postfix doing the relay's job, and against no relay at all (the cost of
    the hop); medians over the rounds, the ratio's range in brackets."""
    if "postfix_relay" not in o:  # results from before the Postfix relay peer
        return [
            _outbound_row(
                f"outbound replies ({o['messages']} msgs) vs direct",
                o,
                "postfix_direct",
                "delivered_ratio",
            )
        ]
    runs = f"{o['messages']} msgs x {o['rounds']} rounds"
    return [
        _outbound_row(
            f"outbound replies ({runs}) vs Postfix relay", o, "postfix_relay", "relay_ratio"
        ),
        _outbound_row(
            "  cost of the hop (vs no relay: direct to Postfix)",
            o,
            "postfix_direct",
            "delivered_ratio",
        ),
    ]


def _outbound_target(o: dict[str, Any]) -> dict[str, Any]:
    r = o["relay_ratio"]
    lo, hi = o["relay_ratio_range"]
    return {
        "target": "relay outbound throughput >= Postfix relaying the same replies",
        "measured": f"median ratio {r}x over {o['rounds']} rounds ({lo}-{hi}); "
        f"vs no relay {o['delivered_ratio']}x",
        "met": (r or 0.0) >= 1.0,
    }


def _summary(summary: dict[str, int] | None) -> str:
    if not summary:
        return "n/a"
    return " ".join(f"{k}={v}" for k, v in summary.items() if v)


def _profile_table(pr: dict[str, Any]) -> str:
    rows = [
        [str(r["addresses"])]
        + [
            f"{_f(r[name]['median_s'], ' s')} ({_f(r[name]['ratio_to_n1'], 'x')})"
            for name in ("add", "remove", "list", "import")
            if name in r
        ]
        for r in pr["runs"]
    ]
    return _table(
        f"profile edits, fresh processes (median of {pr['repeat']}; ratio to 1 address)",
        ["addresses", "add-address", "remove-address", "list", f"import {pr.get('import_rows')}"],
        rows,
    )


def _profile_targets(pr: dict[str, Any]) -> list[dict[str, Any]]:
    last = pr["runs"][-1]
    n = last["addresses"]
    out = [
        {
            "target": f"{name} at {n} addresses within 1.5x of 1 address",
            "measured": f"{last[name]['ratio_to_n1']}x",
            "met": (last[name]["ratio_to_n1"] or 99) <= 1.5,
        }
        for name in ("add", "remove")
    ]
    if "import" in last:
        out.append(
            {
                "target": f"import {pr['import_rows']} addresses into {n} under 3 s",
                "measured": f"{last['import']['median_s']} s",
                "met": last["import"]["median_s"] < 3.0,
            }
        )
    out.append(
        {
            "target": f"list of {n} addresses under 1 s",
            "measured": f"{last['list']['median_s']} s",
            "met": last["list"]["median_s"] < 1.0,
        }
    )
    return out


def _floor_line(fl: dict[str, Any]) -> str:
    return (
        f"verify N=1 latency floor: {fl['critical_path_round_trips']} round trips x "
        f"{fl['rtt_s'] * 1000:.0f} ms + python -c pass {fl['python_c_pass_s'] * 1000:.0f} ms = "
        f"{_f(fl['floor_s'], ' s')}; N=1 {_f(fl['n1_s'], ' s')} = {_f(fl['n1_ratio_to_floor'], 'x')} "
        f"the floor (at twice the RTT {_f(fl['n1_doubled_rtt_s'], ' s')}: "
        f"{fl['measured_round_trips']} round trips waited for one after another)"
    )


def _speedup_target(run: dict[str, Any], times: int) -> dict[str, Any]:
    return {
        "target": f"verify N={run['n']} at least {times}x faster than checkdmarc",
        "measured": f"{run['speedup_vs_checkdmarc']}x",
        "met": (run["speedup_vs_checkdmarc"] or 0) >= times,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets (benchmarks/README.md), each with what was measured; reported,
    never asserted."""
    out: list[dict[str, Any]] = []
    ve = results.get("verify")
    if ve and not results["meta"].get("quick"):
        last = ve["runs"][-1]
        out.append(
            {
                "target": f"verify N={last['n']} within 3x of N=1",
                "measured": f"{last['ratio_to_n1']}x",
                "met": (last["ratio_to_n1"] or 99) <= 3,
            }
        )
        out.append(_speedup_target(last, 20))
        out += [_speedup_target(r, 30) for r in ve["runs"] if r["n"] == 30]
    re_ = results.get("relay")
    if re_:
        out.append(_inbound_target(re_["inbound"]))
        sc = re_.get("memory_at_scale")
        if sc and not results["meta"].get("quick"):
            out.append(
                {
                    "target": f"relay RSS <= 150 MiB with {sc['addresses']} addresses and "
                    f"{sc['idle_connections']} idle connections",
                    "measured": f"{sc['peak_rss_kib'] // 1024} MiB peak",
                    "met": sc["peak_rss_kib"] <= sc["target_kib"]
                    and sc["greeted"] == sc["idle_connections"],
                }
            )
        if "relay_ratio" in re_["outbound"]:  # not in results from before the Postfix relay peer
            out.append(_outbound_target(re_["outbound"]))
    pr = results.get("profile")
    if pr and not results["meta"].get("quick"):
        out += _profile_targets(pr)
    st = results.get("startup")
    if st:
        r = st["smtpconn_help"]["ratio_to_python"] or 99
        out.append(
            {
                "target": "smtpconn --help under 4x python -c pass",
                "measured": f"{r}x",
                "met": r < 4,
            }
        )
    return out


if __name__ == "__main__":
    print(render_table(json.loads(Path(sys.argv[1]).read_text())))
