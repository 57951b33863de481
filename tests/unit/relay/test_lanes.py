"""Outbound lanes: pacing and back-off of one lane, the worker serving the other lanes while
one is throttled or full, and a split reply whose retry only sends what was not accepted."""

from __future__ import annotations

import asyncio
import json
import math
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
    lane.reserve(101.0, "m2", 1)
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


# -- the daily budget with transactions under way -----------------------------------------------

BUDGET_PROFILE = """
version = 1
[[addresses]]
address = "a@example.com"
mode = "outbound-only"
[addresses.outbound]
host = "slow.example.com"
username = "relay"
secret = "env:SMTPCONN_UNIT_SECRET"
[addresses.outbound.limits]
max_connections = {connections}
recipients_per_day = {per_day}
[relay]
spool = "spool"
retry_initial = 5
retry_window = 60
"""


def _budget_config(tmp_path: Path, per_day: int, connections: int = 5) -> RelayConfig:
    text = BUDGET_PROFILE.format(per_day=per_day, connections=connections)
    return build_config(parse_profile(Path("p.toml"), text.encode()), tmp_path)


def test_transactions_under_way_hold_their_recipients_in_the_day_budget() -> None:
    lane = Lane("x:587", SendingLimits(max_connections=8, recipients_per_day=10))
    lane.delivered(0.0, 4)
    started = []
    for i in range(8):  # what the worker does on one turn of the loop
        if lane.wait(100.0, 3) == 0:
            lane.started(100.0, f"m{i}", 3)
            started.append(i)
    assert started == [0, 1]  # 4 sent + 2 x 3 under way = 10; each alone would have fit
    assert lane.wait(100.0, 1) == pytest.approx(86300.0)  # when the 4 sent age out
    fresh = Lane("y:587", SendingLimits(recipients_per_day=3))
    fresh.started(0.0, "a", 3)
    assert fresh.pace(0.0, 1) == math.inf  # only the transaction under way can free room
    lane.settle(101.0, "m0", 1)  # two of its three refused: freed, not spent
    lane.finished("m0")
    assert lane.wait(101.0, 2) == 0.0
    assert lane.claim(101.0, "m9", 2) == 0.0 and lane.reserved == {"m1": 3, "m9": 2}
    assert lane.claim(101.0, "m8", 1) > 0  # the budget is taken, no reservation made
    assert "m8" not in lane.reserved
    lane.finished("m1")  # a delivery that ended early (a crash) frees what it held
    lane.settle(102.0, "m9", 2)
    assert lane.sent_today(102.0) == 7 and not lane.reserved


def test_a_launch_reservation_is_used_by_the_delivery_not_taken_twice() -> None:
    lane = Lane("x:587", SendingLimits(recipients_per_day=3, messages_per_minute=1))
    assert lane.wait(0.0, 3) == 0.0
    lane.started(0.0, "m", 3)
    assert lane.claim(0.0, "m", 3) == 0.0  # the worker's reservation, no second start
    assert len(lane.starts) == 1 and lane.reserved == {"m": 3}


async def test_concurrent_deliveries_near_the_budget_never_exceed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s3cret")
    config = _budget_config(tmp_path, per_day=10, connections=5)
    spool = Spool(config.spool_dir)
    spool.create()
    lanes = Lanes(lambda: config)
    accepted: list[str] = []
    peak = {"now": 0, "max": 0}

    async def deliverer(_s: Any, _k: str, _f: str, batch: list[str], _m: bytes, **_: Any) -> Result:
        peak["now"] += 1
        peak["max"] = max(peak["max"], peak["now"])
        await asyncio.sleep(0.05)
        peak["now"] -= 1
        accepted.extend(batch)
        return Result([Outcome(r, True, False, 250, "ok") for r in batch])

    delivery = OutboundDelivery(
        config,
        spool,
        deliverer,
        None,  # type: ignore[arg-type]
        lambda *_: None,
        lanes,
    )
    worker = QueueWorker(spool, "outbound", delivery, poll=0.05, lanes=lanes)
    worker.start()
    entries = spool.put_many(
        [
            (
                Envelope("outbound", "a@example.com", (f"r{i}a@y", f"r{i}b@y", f"r{i}c@y"), 1.0),
                b"m",
                None,
            )
            for i in range(6)
        ]
    )
    worker.add(entries)
    await _until(lambda: len(accepted) == 9 and worker.busy == 0)
    await asyncio.sleep(0.3)
    await worker.stop(1.0)
    assert len(accepted) == 9  # three replies of three: 12 would pass 10
    assert peak["max"] == 3
    lane = lanes.lane("slow.example.com:587")
    assert lane.sent_today(time.time()) == 9 and not lane.reserved
    assert len(list(spool.entries("outbound"))) == 3  # waiting for tomorrow's budget
    assert list(spool.entries("inbound")) == []


# -- the retry window counts real failures only -------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _scripted(replies: list[tuple[int, str]], calls: list[list[str]]) -> Any:
    """A server answering each transaction with the next reply (250: accepted)."""

    async def deliverer(_s: Any, _k: str, _f: str, batch: list[str], _m: bytes, **_: Any) -> Result:
        calls.append(list(batch))
        code, text = replies.pop(0)
        return Result([Outcome(r, code == 250, code >= 500, code, text) for r in batch])

    return deliverer


async def test_a_reply_paced_behind_the_budget_past_the_window_is_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s3cret")
    config = _budget_config(tmp_path, per_day=1)  # retry_window = 60
    spool = Spool(config.spool_dir)
    spool.create()
    clock = _Clock()
    lanes = Lanes(lambda: config)
    lanes.lane("slow.example.com:587").delivered(clock.now, 1)  # today's budget is spent
    [entry] = spool.put_many(
        [(Envelope("outbound", "a@example.com", ("r@y",), clock.now), b"m", None)]
    )
    calls: list[list[str]] = []
    replies = [(451, "4.3.0 try again later"), (250, "ok")]
    delivery = OutboundDelivery(
        config,
        spool,
        _scripted(replies, calls),
        None,  # type: ignore[arg-type]
        lambda *_: None,
        lanes,
        clock=clock,
    )
    outcome = await delivery(entry)
    assert calls == [] and outcome.state is not None
    assert outcome.state.attempts == 0 and outcome.state.next_attempt > clock.now + 86000
    [item] = list_queue(spool, "outbound")
    assert item.status == "deferred" and "sending limit reached" in (item.state.last_error or "")
    clock.now = outcome.state.next_attempt + 3600  # a day behind the budget, then some more
    outcome = await delivery(entry)  # its first real failure: the window starts only now
    assert calls == [["r@y"]] and outcome.state is not None and outcome.state.attempts == 1
    clock.now = outcome.state.next_attempt
    assert await delivery(entry) == Attempted(None)
    assert calls == [["r@y"], ["r@y"]]
    assert list(spool.entries("inbound")) == []  # never bounced


async def test_time_throttled_is_off_the_window_but_real_failures_still_end_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s3cret")
    config = _budget_config(tmp_path, per_day=1000)  # retry_window = 60, retry_initial = 5
    spool = Spool(config.spool_dir)
    spool.create()
    clock = _Clock()
    start = clock.now
    lanes = Lanes(lambda: config)
    [entry] = spool.put_many(
        [(Envelope("outbound", "a@example.com", ("r@y",), clock.now), b"m", None)]
    )
    calls: list[list[str]] = []
    refused = (451, "4.3.0 try again later")
    throttled = (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
    replies = [refused] + [throttled] * 8 + [refused] * 20
    delivery = OutboundDelivery(
        config,
        spool,
        _scripted(replies, calls),
        None,  # type: ignore[arg-type]
        lambda *_: None,
        lanes,
        clock=clock,
    )

    async def attempt_when_due() -> Attempted | None:
        outcome = await delivery(entry)
        if outcome is not None and outcome.state is not None:
            clock.now = outcome.state.next_attempt
        return outcome

    await attempt_when_due()  # a real failure: the window starts
    for _ in range(8):  # throttled for 5+10+…+640 s, far past the 60 s window
        outcome = await attempt_when_due()
        assert outcome is not None and outcome.state is not None
        assert outcome.state.throttled_until and outcome.state.attempts == 1
    assert clock.now - start > 1000
    assert list(spool.entries("inbound")) == []
    while list(spool.entries("outbound")):  # real failures again: they end it, ~60 s of them
        assert len(calls) < 25, "never bounced"
        await attempt_when_due()
    [bounce] = list(spool.entries("inbound"))
    assert b"Status: 4.4.7" in spool.message(bounce)
    assert 3 <= len(calls) - 9 <= 5  # 5 + 10 + 20 + 40 s of failing: the window is used up


# -- lanes.json ---------------------------------------------------------------------------------


def test_lanes_of_servers_gone_from_the_profile_are_pruned_when_idle(tmp_path: Path) -> None:
    current = {"config": _config(tmp_path)}
    now = time.time()
    lanes = Lanes(lambda: current["config"], tmp_path / LANES_FILE)
    lanes.lane("slow.example.com:587")
    lanes.lane("old.example.com:587").delivered(now - 86400 - 10, 5)  # yesterday's only
    lanes.lane("today.example.com:587").delivered(now - 3600, 5)  # still in today's budget
    lanes.lane("backoff.example.com:587").throttle(now, "421 4.7.0 slow down", initial=600)
    lanes.lane("busy.example.com:587").started(now, "m", 1)
    document = lanes.dump()
    assert document is not None
    kept = set(json.loads(document)["lanes"])
    assert kept == {
        "slow.example.com:587",  # in the profile
        "fast.example.com:587",
        "today.example.com:587",
        "backoff.example.com:587",
        "busy.example.com:587",
    } - {"fast.example.com:587"}
    # A reload without slow.example.com: its idle lane goes, the busy one once it is done.
    text = PROFILE.format(a_connections=1).replace("slow.example.com", "new.example.com")
    current["config"] = build_config(parse_profile(Path("p.toml"), text.encode()), tmp_path)
    lanes.lane("busy.example.com:587").finished("m")
    assert sorted(lanes.prune(now)) == ["busy.example.com:587", "slow.example.com:587"]
    lanes.write(lanes.dump() or b"")
    restored = Lanes(lambda: current["config"], tmp_path / LANES_FILE)
    assert set(json.loads(restored.dump(force=True) or b"")["lanes"]) == {
        "today.example.com:587",
        "backoff.example.com:587",
    }
