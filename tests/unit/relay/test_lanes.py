"""Outbound lanes: pacing and back-off of one lane, the worker serving the other lanes while
one is throttled or full, and a split reply whose retry only sends what was not accepted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtpconn.profile.model import SendingLimits
from smtpconn.profile.store import parse_profile
from smtpconn.relay.config import RelayConfig, build_config
from smtpconn.relay.lanes import LANES_FILE, Lane, Lanes
from smtpconn.relay.outbound import OutboundDelivery
from smtpconn.relay.queue import list_queue
from smtpconn.relay.spool import Envelope, Spool, SpoolEntry
from smtpconn.relay.worker import Attempted, QueueWorker

PROFILE = """
version = 1
[[addresses]]
address = "a@example.com"
mode = "outbound-only"
[addresses.outbound]
host = "slow.example.com"
username = "relay"
secret = "env:SMTPCONN_UNIT_SECRET"
[addresses.outbound.limits]
max_connections = {a_connections}
recipients_per_message = 100
[[addresses]]
address = "b@example.com"
mode = "outbound-only"
[addresses.outbound]
host = "fast.example.com"
username = "relay"
secret = "env:SMTPCONN_UNIT_SECRET"
[relay]
spool = "spool"
retry_initial = 5
"""


def _config(tmp_path: Path, a_connections: int = 3) -> RelayConfig:
    text = PROFILE.format(a_connections=a_connections)
    return build_config(parse_profile(Path("p.toml"), text.encode()), tmp_path)


# -- one lane -----------------------------------------------------------------------------------


def test_messages_per_minute_spaces_transactions() -> None:
    lane = Lane("x:587", SendingLimits(messages_per_minute=2))
    lane.started(100.0)
    lane.transaction(101.0)
    assert lane.pace(102.0, 1) == pytest.approx(58.0)
    assert lane.pace(160.5, 1) == 0.0


def test_recipients_per_day_waits_for_the_oldest_to_age_out() -> None:
    lane = Lane("x:587", SendingLimits(recipients_per_day=10))
    lane.delivered(1000.0, 6)
    lane.delivered(2000.0, 4)
    assert lane.pace(3000.0, 3) == pytest.approx(1000.0 + 86400 - 3000.0)
    assert lane.pace(1000.0 + 86400 + 1, 3) == 0.0


def test_a_throttle_backs_off_once_for_replies_already_under_way() -> None:
    lane = Lane("x:587", SendingLimits(max_connections=3))
    until = lane.throttle(100.0, "432 4.3.2", initial=5)
    assert until == 105.0 and lane.concurrency == 1
    assert lane.throttle(100.5, "432 4.3.2", initial=5) == 105.0  # the same burst
    assert lane.throttle(106.0, "432 4.3.2", initial=5) == 116.0  # again after it: doubled
    lane.delivered(120.0, 1)
    assert lane.concurrency == 2 and lane.throttles == 0
    lane.delivered(121.0, 1)
    assert lane.concurrency == 3


# -- the worker ---------------------------------------------------------------------------------


def _put(spool: Spool, sender: str, n: int) -> list[SpoolEntry]:
    return spool.put_many(
        [(Envelope("outbound", sender, ("r@y.test",), time.time()), b"m", None) for _ in range(n)]
    )


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_throttled_lane_waits_and_the_others_go_on(tmp_path: Path) -> None:
    config = _config(tmp_path, a_connections=1)
    spool = Spool(config.spool_dir)
    spool.create()
    lanes = Lanes(lambda: config)
    slow = lanes.lane("slow.example.com:587")
    slow.throttle(time.time(), "432 4.3.2 sender thread limit exceeded", initial=60)
    done: list[str] = []
    running: dict[str, int] = {"now": 0, "peak": 0}

    async def process(entry: SpoolEntry) -> Attempted:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1
        done.append(entry.envelope.mail_from)
        await asyncio.to_thread(spool.remove, entry)
        return Attempted(None)

    worker = QueueWorker(spool, "outbound", process, poll=0.05, lanes=lanes)
    worker.start()
    worker.add(_put(spool, "a@example.com", 3) + _put(spool, "b@example.com", 3))
    await _until(lambda: done.count("b@example.com") == 3)
    assert "a@example.com" not in done  # its server asked us to wait
    slow.throttled_until = 0.0  # the back-off ends
    worker.wake()
    await _until(lambda: done.count("a@example.com") == 3)
    await worker.stop(1.0)


async def test_max_connections_bounds_the_lane(tmp_path: Path) -> None:
    config = _config(tmp_path, a_connections=2)
    spool = Spool(config.spool_dir)
    spool.create()
    lanes = Lanes(lambda: config)
    now = {"a": 0}
    peak = {"a": 0}

    async def process(entry: SpoolEntry) -> Attempted:
        now["a"] += 1
        peak["a"] = max(peak["a"], now["a"])
        await asyncio.sleep(0.03)
        now["a"] -= 1
        await asyncio.to_thread(spool.remove, entry)
        return Attempted(None)

    worker = QueueWorker(spool, "outbound", process, poll=0.05, lanes=lanes)
    worker.start()
    worker.add(_put(spool, "a@example.com", 8))
    await _until(lambda: not spool.ids("outbound"))
    await worker.stop(1.0)
    assert peak["a"] == 2


# -- a split reply ------------------------------------------------------------------------------


@dataclass
class Outcome:
    recipient: str
    accepted: bool
    permanent: bool
    code: int | None
    text: str


@dataclass
class Result:
    recipients: list[Any]


async def test_split_reply_records_each_transaction_and_never_resends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s3cret")
    config = _config(tmp_path)
    spool = Spool(config.spool_dir)
    spool.create()
    rcpts = tuple(f"r{i}@y.test" for i in range(250))
    spool.put(Envelope("outbound", "a@example.com", rcpts, time.time()), b"m")
    entry = next(spool.entries("outbound"))
    calls: list[list[str]] = []
    quota = "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"

    async def deliverer(_s: Any, _k: str, _f: str, batch: list[str], _m: bytes, **_: Any) -> Result:
        calls.append(list(batch))
        if len(calls) == 2:  # the second transaction hits the daily quota
            return Result([Outcome(r, False, True, 554, quota) for r in batch])
        return Result([Outcome(r, True, False, 250, "ok") for r in batch])

    lanes = Lanes(lambda: config, tmp_path / "spool" / LANES_FILE)
    delivery = OutboundDelivery(
        config,
        spool,
        deliverer,
        None,
        lambda *_: None,
        lanes,  # type: ignore[arg-type]
    )
    outcome = await delivery(entry)
    assert [len(c) for c in calls] == [100, 100]  # the third is not tried on a throttled server
    assert outcome.state is not None and len(outcome.state.done) == 100
    assert outcome.state.throttled_until >= time.time() + 4
    assert list(spool.entries("inbound")) == []  # a quota is never a bounce
    [item] = list_queue(spool, "outbound")
    assert item.status == "throttled" and item.to_json()["throttled_until"]
    lanes.lane("slow.example.com:587").throttled_until = 0.0
    assert await delivery(entry) == Attempted(None)
    assert [len(c) for c in calls] == [100, 100, 100, 50]
    sent = [r for c in calls[:1] + calls[2:] for r in c]
    assert sorted(sent) == sorted(rcpts)  # everyone once
    document = lanes.dump(force=True)
    assert document is not None and b'"recipients_24h": 250' in document


def test_metrics_show_a_throttled_lane(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from smtpconn.relay.metrics import RelayMetrics

    config = _config(tmp_path)
    metrics = RelayMetrics(Spool(tmp_path / "spool"), lambda: config)
    until = time.time() + 120
    from datetime import UTC, datetime

    metrics(
        "outbound.throttled",
        {"server": "slow.example.com:587", "until": datetime.fromtimestamp(until, UTC).isoformat()},
    )
    text = generate_latest(metrics.registry).decode()
    line = next(
        x for x in text.splitlines() if x.startswith("smtpconn_outbound_throttled_seconds{")
    )
    assert 'server="slow.example.com:587"' in line and float(line.split()[-1]) > 100
