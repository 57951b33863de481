"""What a shard child keeps up beside its sessions (``[relay] processes``): its spool's slots are
settled like the main's, and the main's metrics count the sessions it served."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .conftest import RelayEnv, RelayProcess
from .test_relay_processes import _edit_profile, _metric, _pipe_sink, _sessions, _start, _wait


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
