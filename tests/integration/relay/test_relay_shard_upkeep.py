"""What a shard child keeps up beside its sessions (``[relay] processes``), and how the main looks
after its children: slots settled in every process, the children's sessions counted, a reload
that never kills a starting child, a left-over shard drained whenever it gets mail, and a role
taken only from the main that started the process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiosmtplib

from .conftest import RelayEnv, RelayProcess
from .test_relay_processes import (
    _alive,
    _children,
    _edit_profile,
    _metric,
    _pipe_sink,
    _sessions,
    _start,
    _wait,
)


def _linked_twice(directory: Path) -> list[str]:
    return [p.name for p in directory.glob("*.msg") if p.stat().st_nlink > 1]


async def test_a_child_settles_its_slots_as_the_main_does(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    # The sink defers everything, so the messages stay queued: a queue file still linked from
    # its slot after a few seconds means the child never settled (and kept growing a list of
    # every message it spooled, for as long as it ran).
    out, flag = relay_env.root / "out", relay_env.root / "fixed"
    _pipe_sink(relay_env, out, flag, exit_code=75)
    relay = _start(relay_env, relay_process)
    await _sessions(relay.inbound_port, relay_env.addresses["outbound-only"], 16, 1)
    shard = relay_env.spool / "shards" / "1" / "inbound"
    _wait(lambda: any(shard.glob("*.msg")), relay)  # the child queued some of them
    _wait(lambda: not _linked_twice(shard), relay)
    _wait(lambda: not _linked_twice(relay_env.spool / "inbound"), relay)


async def test_the_sessions_metric_counts_the_childrens_sessions(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    _edit_profile(relay_env, lambda d: d["relay"].update(metrics_listen="127.0.0.1:0"))
    relay = _start(relay_env, relay_process)
    port = int(re.findall(r"event=metrics.ready listen=[\d.]+:(\d+)", relay.log.read_text())[0])
    await _sessions(relay.inbound_port, relay_env.addresses["outbound-only"], 20, 1)

    def accepted() -> float:
        return _metric(port, "smtpconn_messages_total", direction="inbound", outcome="accepted")

    _wait(lambda: accepted() == 20, relay)
    served = {
        m for m in re.findall(r"event=inbound.accepted .*? shard=(\d+)", relay.log.read_text())
    }
    assert served == {"0", "1"}  # both processes served some
    assert _metric(port, "smtpconn_sessions_total", listener="inbound") == 20


async def test_a_reload_while_a_child_starts_reaches_it_once_it_is_ready(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    # SIGHUP's default action kills a process that has not installed its handler yet: a reload
    # right after a child's (re)start used to kill it (exit -1) and double its back-off.
    relay = _start(relay_env, relay_process)
    [child] = _children(relay).values()
    os.kill(child, signal.SIGKILL)
    _wait(lambda: _children(relay).get(1, child) != child, relay)
    new = _children(relay)[1]
    relay.process.send_signal(signal.SIGHUP)  # an administrator's reload at that moment
    _wait(lambda: "event=relay.reloaded" in _lines_of(relay, new), relay)
    assert _alive(new)
    assert not re.search(r"event=relay.shard-exited shard=1 code=-1\b", relay.log.read_text())


def _lines_of(relay: RelayProcess, pid: int) -> str:
    return "\n".join(line for line in relay.log.read_text().splitlines() if f"pid={pid}" in line)


async def test_a_shard_that_receives_mail_after_the_main_started_is_drained(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    # The child of a killed main (processes = 2) finishes its open sessions while a new main
    # starts with processes = 1: what that child acknowledged lands in shard 1, which nobody
    # served when the new main looked at start-up.
    out, flag = relay_env.root / "out", relay_env.root / "fixed"
    _pipe_sink(relay_env, out, flag, exit_code=75)  # the help desk is down for a moment
    relay = _start(relay_env, relay_process)
    old_child = _children(relay)[1]
    rcpt = relay_env.addresses["outbound-only"]
    clients = []
    for _ in range(8):
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=relay.inbound_port, start_tls=False, timeout=20
        )
        await client.connect()
        await client.ehlo()
        await client.mail("someone@good.test")
        await client.rcpt(rcpt)
        clients.append(client)
    relay.process.kill()
    relay.process.wait(10)
    _edit_profile(relay_env, lambda d: d["relay"].update(processes=1))
    again = relay_process(inbound_port=relay.inbound_port)
    acknowledged = 0
    for i, client in enumerate(clients):
        with contextlib.suppress(aiosmtplib.SMTPException):
            code, _ = await client.data(f"Subject: late-{i}\r\n\r\nlate-{i}\r\n")
            acknowledged += code == 250
    assert acknowledged  # the old child finished some of them into shard 1
    _wait(lambda: not _alive(old_child), again)  # it stopped: nothing of it delivers them
    flag.touch()  # the help desk is back
    _wait(lambda: len(list(out.iterdir())) == acknowledged, again, timeout=40)
    assert "event=relay.shard-started shard=1" in again.log.read_text()


def test_a_stray_shard_variable_is_refused_not_obeyed(relay_env: RelayEnv) -> None:
    host, port = relay_env.settings.resolvers[0]
    command = [
        sys.executable, "-m", "smtpconn", "relay", "--profile", str(relay_env.profile),
        "--resolver", f"{host}:{port}", "--inbound-listen", "127.0.0.1:0",
    ]  # fmt: skip
    for value in ("1", "one"):
        done = subprocess.run(
            command,
            env={**os.environ, "SMTPCONN_SHARD": value},
            stdin=subprocess.DEVNULL,  # what a service gets
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr[-800:]
        assert "SMTPCONN_SHARD" in done.stderr and "unset" in done.stderr
        assert "Traceback" not in done.stderr
