"""``[relay] processes = N``: the relay as a subprocess with shard children (one shared accept queue,
one spool shard each). Sessions spread over the processes, every message reaches the sink once,
the main counts the children's events, ``queue`` sees the shards, SIGHUP reaches the children,
SIGTERM stops them all, the children follow a killed main, and a killed child comes back and
delivers what it acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import tomllib
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosmtplib

from .conftest import RelayEnv, RelayProcess, write_profile

PROCESSES = 2
_STARTED = re.compile(r"event=relay\.shard-started shard=(\d+) pid=(\d+)")
_ACCEPTED = re.compile(r"event=inbound\.accepted .*")
TOKEN = re.compile(rb"shard-test-[0-9a-f]{12}")


def _edit_profile(env: RelayEnv, change: Callable[[dict[str, Any]], None]) -> None:
    data = tomllib.loads(env.profile.read_text())
    change(data)
    write_profile(env.profile, data["addresses"], data["relay"])


def _add_addresses(env: RelayEnv, names: Sequence[str]) -> None:
    def add(data: dict[str, Any]) -> None:
        template = next(a for a in data["addresses"] if a["mode"] == "outbound-only")
        data["addresses"] += [{**template, "address": f"{n}@{env.domain}"} for n in names]

    _edit_profile(env, add)


def _start(
    env: RelayEnv,
    relay_process: Callable[..., RelayProcess],
    processes: int = PROCESSES,
    port: int = 0,
) -> RelayProcess:
    """The relay with ``processes`` processes, once every shard child listens. (Each process
    takes its share of max_connections_per_ip and every session here comes from 127.0.0.1:
    the tests open more at once than a share of the default 20.)"""
    _edit_profile(env, lambda d: d["relay"].update(max_connections_per_ip=100))
    relay = relay_process(inbound_port=port, args=["--processes", str(processes)])
    _wait(lambda: relay.log.read_text().count("event=relay.shard-ready") >= processes - 1, relay)
    return relay


def _wait(predicate: Callable[[], bool], relay: RelayProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out; relay log:\n{relay.log.read_text(errors='replace')}")


def _children(relay: RelayProcess) -> dict[int, int]:
    """shard -> pid of its latest child."""
    return {int(s): int(p) for s, p in _STARTED.findall(relay.log.read_text())}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _message(rcpt: str, token: str) -> str:
    return f"From: someone@good.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\n{token}\r\n"


async def _session(port: int, rcpt: str, count: int) -> list[str]:
    """One plain forwarding session sending ``count`` messages; the tokens acknowledged."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=20)
    await client.connect()
    acked = []
    for _ in range(count):
        token = f"shard-test-{uuid.uuid4().hex[:12]}"
        await client.sendmail("someone@good.test", [rcpt], _message(rcpt, token))
        acked.append(token)
    await client.quit()
    return acked


async def _sessions(port: int, rcpt: str, sessions: int, per_session: int) -> list[str]:
    found = await asyncio.gather(*(_session(port, rcpt, per_session) for _ in range(sessions)))
    return [token for tokens in found for token in tokens]


def _sink_counts(env: RelayEnv) -> Counter[bytes]:
    return Counter(m.group() for raw in env.sink_messages() if (m := TOKEN.search(raw)))


def _served_by(relay: RelayProcess, token_or_rcpt: str) -> set[str]:
    """The shard= of every inbound.accepted line that names ``token_or_rcpt``."""
    lines = [
        line for line in relay.log.read_text().splitlines() if "event=inbound.accepted" in line
    ]
    return {
        m.group(1)
        for line in lines
        if token_or_rcpt in line and (m := re.search(r" shard=(\d+)", line))
    }


def _metric(port: int, name: str, **labels: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_sessions_spread_each_message_once_and_the_main_counts_the_children(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    # Which process takes a lone session is up to the kernel and which loop is idle first (an
    # idle main often wins every time): enough tries that one lands on the child.
    solos = [f"solo-{i}" for i in range(40)]
    _add_addresses(relay_env, solos)
    _edit_profile(relay_env, lambda d: d["relay"].update(metrics_listen="127.0.0.1:0"))
    relay = _start(relay_env, relay_process)
    metrics_port = int(
        re.findall(r"event=metrics.ready listen=[\d.]+:(\d+)", relay.log.read_text())[0]
    )
    rcpt = relay_env.addresses["outbound-only"]

    acked = await _sessions(relay.inbound_port, rcpt, sessions=24, per_session=3)
    assert len(acked) == 72
    _wait(lambda: set(_sink_counts(relay_env)) >= {t.encode() for t in acked}, relay)
    counts = _sink_counts(relay_env)
    assert all(counts[t.encode()] == 1 for t in acked), "a message reached the sink twice"
    served = _served_by(relay, rcpt)
    assert served == {"0", "1"}, f"sessions served by shards {served}: not spread"
    # The main's metrics count every process's messages (the children's came over their pipes).
    _wait(
        lambda: (
            _metric(
                metrics_port, "smtpconn_messages_total", direction="inbound", outcome="accepted"
            )
            == 72
        ),
        relay,
    )

    # One message for each address of its own, until one a child served: the main never saw
    # that address itself, yet its status file has it.
    for solo in solos:
        address = f"{solo}@{relay_env.domain}"
        await _session(relay.inbound_port, address, 1)
        _wait(lambda a=address: bool(_served_by(relay, a)), relay)
        if _served_by(relay, address) == {"1"}:
            break
    else:
        raise AssertionError("no single session reached the child")
    status = relay_env.spool / "status.json"

    def recorded() -> bool:
        try:
            entry = json.loads(status.read_text())["addresses"].get(address, {})
        except (OSError, ValueError):
            return False
        return "last_inbound_accepted" in entry and "last_inbound_delivered" in entry

    _wait(recorded, relay)
    report = json.loads(relay_env.cli("status", "--json").stdout)
    assert address in {a["address"] for a in report["addresses"]}


def _pipe_sink(env: RelayEnv, out: Path, flag: Path, exit_code: int) -> None:
    """A pipe sink that fails with ``exit_code`` until ``flag`` exists, then writes the message
    to a file of its own in ``out``."""
    script = env.root / "gate.py"
    script.write_text(
        f"""#!{sys.executable}
import os, sys, uuid
data = sys.stdin.buffer.read()
if not os.path.exists({str(flag)!r}):
    print("help desk queue missing", file=sys.stderr)
    sys.exit({exit_code})
with open(os.path.join({str(out)!r}, uuid.uuid4().hex), "wb") as handle:
    handle.write(data)
"""
    )
    script.chmod(0o755)
    out.mkdir()
    _edit_profile(env, lambda d: d["relay"].update(sink={"kind": "pipe", "command": [str(script)]}))


def _out_counts(out: Path) -> Counter[bytes]:
    return Counter(m.group() for p in out.iterdir() if (m := TOKEN.search(p.read_bytes())))


async def test_a_held_message_in_a_shard_is_listed_and_retry_delivers_it(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    out, flag = relay_env.root / "out", relay_env.root / "fixed"
    _pipe_sink(relay_env, out, flag, exit_code=1)  # exit 1: permanent, held
    relay = _start(relay_env, relay_process)
    acked = await _sessions(relay.inbound_port, relay_env.addresses["outbound-only"], 12, 1)
    _wait(lambda: relay.log.read_text().count("event=inbound.held") == 12, relay)

    listed = relay_env.cli("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    items = document["messages"] if isinstance(document, dict) else document
    assert len(items) == 12 and {i["status"] for i in items} == {"held"}
    in_shard = [p.stem for p in (relay_env.spool / "shards" / "1" / "inbound").glob("*.msg")]
    assert in_shard, "no message was held by the child"
    assert set(in_shard) <= {i["id"] for i in items}

    held = relay_env.spool / "shards" / "1" / "inbound" / f"{in_shard[0]}.msg"
    found = TOKEN.search(held.read_bytes())
    assert found is not None
    flag.touch()
    retried = relay_env.cli("queue", "retry", in_shard[0][-8:])
    assert retried.returncode == 0, retried.stderr
    _wait(lambda: _out_counts(out) == Counter({found.group(): 1}), relay)
    _wait(lambda: not held.exists(), relay)
    assert relay_env.cli("queue", "retry", "--all").returncode == 0
    _wait(lambda: set(_out_counts(out)) == {t.encode() for t in acked}, relay)
    assert set(_out_counts(out).values()) == {1}


async def test_sighup_reaches_the_children(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    relay = _start(relay_env, relay_process)
    added = f"late@{relay_env.domain}"
    with_late = relay_env.profile.read_text()
    _add_addresses(relay_env, ["late"])
    later = relay_env.profile.read_text()
    relay_env.profile.write_text(with_late)
    refused = await asyncio.gather(
        *(_session(relay.inbound_port, added, 1) for _ in range(6)), return_exceptions=True
    )
    assert all(isinstance(r, aiosmtplib.SMTPRecipientsRefused) for r in refused)

    relay_env.profile.write_text(later)
    reload = relay_env.cli("relay", "--reload")
    assert reload.returncode == 0, reload.stderr
    _wait(lambda: relay.log.read_text().count("event=relay.reloaded") == 2, relay)
    for _ in range(30):
        await _session(relay.inbound_port, added, 1)
        if "1" in _served_by(relay, added):
            break
    else:
        raise AssertionError("the child never accepted the address the reload added")


async def test_sigterm_stops_every_process(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    relay = _start(relay_env, relay_process, processes=3)
    children = list(_children(relay).values())
    assert len(children) == 2 and all(_alive(pid) for pid in children)
    await _sessions(relay.inbound_port, relay_env.addresses["outbound-only"], 6, 2)
    relay.process.send_signal(signal.SIGTERM)
    assert relay.process.wait(30) == 0
    assert not any(_alive(pid) for pid in children)
    assert "event=relay.stopped" in relay.log.read_text()


async def test_a_killed_main_takes_its_children_along(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    relay = _start(relay_env, relay_process)
    [child] = _children(relay).values()
    relay.process.kill()
    relay.process.wait(10)
    _wait(lambda: not _alive(child), relay, timeout=30)


async def test_a_killed_child_is_started_again_and_delivers_what_it_acknowledged(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    out, flag = relay_env.root / "out", relay_env.root / "fixed"
    _pipe_sink(relay_env, out, flag, exit_code=75)  # EX_TEMPFAIL: kept and retried
    relay = _start(relay_env, relay_process)
    [child] = _children(relay).values()
    acked = await _sessions(relay.inbound_port, relay_env.addresses["outbound-only"], 12, 2)
    shard = relay_env.spool / "shards" / "1" / "inbound"
    assert list(shard.glob("*.msg")), "the child acknowledged nothing"
    os.kill(child, signal.SIGKILL)
    _wait(lambda: "event=relay.shard-exited" in relay.log.read_text(), relay)
    _wait(lambda: _children(relay).get(1, child) != child, relay)
    flag.touch()
    _wait(lambda: set(_out_counts(out)) == {t.encode() for t in acked}, relay, timeout=40)
    assert set(_out_counts(out).values()) == {1}
    assert _alive(_children(relay)[1])


async def test_a_shard_left_by_a_larger_count_is_drained(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    out, flag = relay_env.root / "out", relay_env.root / "fixed"
    _pipe_sink(relay_env, out, flag, exit_code=75)  # kept in the spool until the flag exists
    relay = _start(relay_env, relay_process, processes=3)
    acked = await _sessions(relay.inbound_port, relay_env.addresses["outbound-only"], 16, 1)
    shard = relay_env.spool / "shards" / "2"
    assert list((shard / "inbound").glob("*.msg")), "shard 2 holds nothing"
    relay.process.send_signal(signal.SIGTERM)
    assert relay.process.wait(30) == 0

    flag.touch()
    again = relay_process()  # processes = 1 (the default): shards 1 and 2 are drained
    assert relay_env.cli("queue", "retry", "--all").returncode == 0  # due now, not backed off
    _wait(lambda: set(_out_counts(out)) == {t.encode() for t in acked}, again, timeout=40)
    assert set(_out_counts(out).values()) == {1}
    _wait(
        lambda: again.log.read_text().count("event=relay.shard-stopping reason=drained") == 2, again
    )
    assert "drain=True" in again.log.read_text() and "drain=False" not in again.log.read_text()
    assert not list(shard.glob("inbound/*.msg"))
    _wait(lambda: not any(_alive(pid) for pid in _children(again).values()), again)
