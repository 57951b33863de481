"""Pure logic of the relay: spool, back-off, tagging, webhook signatures, config, AUTH cache,
sinks' classification, bounces."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtpconn.errors import ProfileError, UsageError
from smtpconn.message.tag import parse_tag as parse_tag_header
from smtpconn.message.tag import tag_value
from smtpconn.profile.model import profile_to_data
from smtpconn.profile.secrets import hash_password
from smtpconn.profile.store import parse_profile
from smtpconn.relay.config import (
    Credential,
    RelayOverrides,
    build_config,
    check_config,
    parse_listen,
)
from smtpconn.relay.log import format_event
from smtpconn.relay.outbound import OutboundDelivery
from smtpconn.relay.server import CredentialChecker
from smtpconn.relay.sinks.base import SinkError, SinkItem
from smtpconn.relay.sinks.maildir import MaildirSink
from smtpconn.relay.sinks.pipe import PipeSink
from smtpconn.relay.sinks.webhook import encode_multipart, sign, verify_signature
from smtpconn.relay.spool import Envelope, Spool, SpoolLocked, backoff_delay
from smtpconn.relay.tagging import prepend, strip_untrusted

PROFILE = """
version = 1
[[addresses]]
address = "support@example.com"
mode = "bidirectional"
[addresses.outbound]
host = "mail.example.com"
username = "relay"
secret = "env:SMTPCONN_UNIT_SECRET"
[addresses.inbound]
username = "customer"
password_hash = "{hash}"
[[addresses]]
address = "Help@Example.com"
mode = "outbound-only"
[addresses.outbound]
host = "mail.example.com"
username = "relay"
secret = "env:SMTPCONN_UNIT_SECRET"
[relay]
spool = "spool"
retry_initial = 2
retry_window = 60
{extra}
[relay.sink]
kind = "{kind}"
{sink}
"""
HASH = hash_password("right")
CUSTOMER = Credential("customer", HASH, frozenset({"support@example.com"}))


def profile(kind: str = "maildir", sink: str = "", extra: str = "") -> Any:
    text = PROFILE.format(hash=HASH, kind=kind, sink=sink, extra=extra)
    return parse_profile(Path("p.toml"), text.encode())


# -- spool ----------------------------------------------------------------------------------


def test_spool_keeps_arrival_order_and_survives_a_new_instance(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.lock()
    ids = [
        spool.put(Envelope("inbound", f"a{i}@x.test", ("r@x.test",), time.time()), b"m%d" % i)
        for i in range(5)
    ]
    spool.unlock()
    again = Spool(tmp_path / "s")
    entries = list(again.entries("inbound"))
    assert [e.id for e in entries] == ids
    assert again.message(entries[3]) == b"m3"
    assert entries[0].envelope.mail_from == "a0@x.test"
    assert list((tmp_path / "s" / "tmp").iterdir()) == []


def test_spool_lock_refuses_a_second_relay_and_cleans_tmp(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s")
    first.lock()
    (tmp_path / "s" / "tmp" / "half.msg").write_bytes(b"never acknowledged")
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "s").lock()
    first.unlock()
    second = Spool(tmp_path / "s")
    second.lock()
    assert list((tmp_path / "s" / "tmp").iterdir()) == []


def test_spool_state_is_advisory(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.create()
    spool.put(Envelope("outbound", "a@x.test", ("r@y.test",), 1.0), b"m")
    entry = next(spool.entries("outbound"))
    entry.path.with_suffix(".state").write_text("{not json")
    assert spool.state(entry).attempts == 0  # a torn state file means "retry now"
    state = spool.state(entry)
    state.attempts, state.done = 3, ["r@y.test"]
    spool.save_state(entry, state)
    assert spool.state(entry).attempts == 3 and spool.state(entry).done == ["r@y.test"]
    spool.remove(entry)
    assert list(spool.entries("outbound")) == []
    assert not entry.path.with_suffix(".state").exists()


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 60, 3600) for n in range(0, 8)] == [
        0,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]
    assert backoff_delay(500, 60, 3600) == 3600


# -- tagging ----------------------------------------------------------------------------------


def test_tag_grammar_round_trips() -> None:
    value = tag_value(True, "bidirectional")
    assert value == "authenticated; mode=bidirectional"
    assert parse_tag_header(tag_value(False, "outbound-only", "relay-dsn")) == {
        "tag": "unauthenticated",
        "mode": "outbound-only",
        "origin": "relay-dsn",
    }


def test_forged_tags_and_our_authentication_results_are_stripped() -> None:
    raw = (
        b"X-Smtpconn-Tag: authenticated;\r\n mode=bidirectional\r\n"
        b"Authentication-Results: relay.example; spf=pass\r\n"
        b"Authentication-Results: mx.other.example; spf=fail\r\n"
        b"Subject: hi\r\n\r\nX-Smtpconn-Tag: in the body stays\r\n"
    )
    clean = strip_untrusted(raw, "relay.example")
    assert clean == (
        b"Authentication-Results: mx.other.example; spf=fail\r\n"
        b"Subject: hi\r\n\r\nX-Smtpconn-Tag: in the body stays\r\n"
    )
    assert prepend(clean, "X-A: 1").startswith(b"X-A: 1\r\nAuthentication-Results")


# -- webhook signatures -------------------------------------------------------------------------


def test_hmac_signature_verifies_and_rejects_tampering_and_replays() -> None:
    body, content_type = encode_multipart(
        {"id": "1", "tag": "authenticated"}, b"Subject: x\r\n\r\n"
    )
    assert content_type.startswith("multipart/form-data; boundary=")
    now = int(time.time())
    header = sign(b"k3y", body, now)
    assert verify_signature(b"k3y", body, header)
    assert not verify_signature(b"other", body, header)
    assert not verify_signature(b"k3y", body + b"x", header)
    assert not verify_signature(b"k3y", body, sign(b"k3y", body, now - 3600))


# -- config -------------------------------------------------------------------------------------


def test_routes_are_exact_and_case_insensitive(tmp_path: Path) -> None:
    config = build_config(profile(), tmp_path)
    route = config.route_for("SUPPORT@example.COM")
    assert route is not None and route.needs_auth
    help_route = config.route_for("help@example.com")
    assert help_route is not None and not help_route.needs_auth
    assert config.route_for("other@example.com") is None
    assert config.route_for("support@example.com.evil.test") is None
    assert config.route_for("not an address") is None
    assert config.sender_address("stranger@example.com") is None


def test_overrides_win_and_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    config = build_config(
        profile(), tmp_path, overrides=RelayOverrides(inbound_listen="127.0.0.1:0", spool="q")
    )
    assert config.inbound_listen.port == 0
    assert config.spool_dir == tmp_path / "q"
    assert config.sink.path == str(tmp_path / "maildir")
    assert config.retry_initial == 2 and config.retry_window == 60


def test_check_requires_tls_for_bidirectional_and_loopback_submission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s")
    config = build_config(
        profile(), tmp_path, overrides=RelayOverrides(submission_listen="0.0.0.0:2587")
    )
    problems = " ".join(check_config(config))
    assert "need TLS" in problems
    assert "not a loopback address" in problems


def test_listen_addresses_are_validated() -> None:
    assert str(parse_listen("[::1]:25", what="x")) == "[::1]:25"
    for bad in ("localhost:25", "127.0.0.1", "127.0.0.1:99999"):
        with pytest.raises(UsageError):
            parse_listen(bad, what="inbound-listen")


def test_new_relay_keys_round_trip_and_unknown_keys_stay_errors() -> None:
    p = profile(
        kind="webhook",
        sink='url = "https://hd.example/in"\ntimeout = 5',
        extra='max_connections_per_ip = 3\ninbound_tls_listen = "127.0.0.1:4650"',
    )
    assert p.relay.sink.timeout == 5 and p.relay.max_connections_per_ip == 3
    data = profile_to_data(p)
    assert data["relay"]["retry_window"] == 60 and data["relay"]["sink"]["timeout"] == 5
    with pytest.raises(ProfileError, match=r"relay\.retry_windw"):
        profile(extra="retry_windw = 5")
    with pytest.raises(ProfileError, match="submission_password_hash"):
        profile(extra='submission_username = "hd"\nsubmission_password_hash = "clear-text"')


# -- AUTH -------------------------------------------------------------------------------------


async def test_credential_checker_caches_success_and_limits_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import smtpconn.relay.server as server

    calls: list[str] = []
    real = server.verify_password  # type: ignore[attr-defined]

    def counting(password: str, encoded: str) -> bool:
        calls.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(server, "verify_password", counting)
    checker = CredentialChecker(lambda: [CUSTOMER], failures_allowed=2, window=60)
    assert await checker.check("customer", b"right")
    assert await checker.check("customer", b"right")
    assert len(calls) == 1  # the second login was answered from the keyed cache
    assert not await checker.check("customer", b"wrong")
    assert not await checker.check("nobody", b"right")
    assert b"right" not in b"".join(checker._good)  # only HMAC digests are kept
    checker.record_failure("192.0.2.1", now=100.0)
    assert not checker.blocked("192.0.2.1", now=100.0)
    checker.record_failure("192.0.2.1", now=101.0)
    assert checker.blocked("192.0.2.1", now=102.0)
    assert not checker.blocked("192.0.2.1", now=200.0)


async def test_concurrent_logins_share_one_scrypt_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import smtpconn.relay.server as server

    calls: list[str] = []
    real = server.verify_password  # type: ignore[attr-defined]

    def counting(password: str, encoded: str) -> bool:
        calls.append(password)
        return real(password, encoded)

    monkeypatch.setattr(server, "verify_password", counting)
    checker = CredentialChecker(lambda: [CUSTOMER], failures_allowed=2, window=60)
    # 20 sessions of a customer's server logging in at the same moment: one scrypt, not 20.
    results = await asyncio.gather(*(checker.check("customer", b"right") for _ in range(20)))
    assert all(results) and calls == ["right"]
    wrong = await asyncio.gather(*(checker.check("customer", b"wrong") for _ in range(3)))
    assert not any(wrong) and calls == ["right", "wrong"]  # failures are never cached
    assert not await checker.check("customer", b"wrong")
    assert calls == ["right", "wrong", "wrong"]
    monkeypatch.setattr(server, "SUCCESS_CACHE_SIZE", 2)
    monkeypatch.setattr(server, "verify_password", lambda password, encoded: True)
    for i in range(5):
        assert await checker.check("customer", b"pw%d" % i)
    assert len(checker._good) == 2  # bounded: the least recently used login was dropped


async def test_credential_checker_answers_which_login_and_its_scope() -> None:
    other_hash = hash_password("other")
    records = [
        Credential("customer", HASH, frozenset({"support@example.com"})),
        Credential("customer", other_hash, frozenset({"sales@example.com"})),
        Credential("kunde-ü", HASH, frozenset({"help@example.com"})),
    ]
    checker = CredentialChecker(lambda: records, failures_allowed=5, window=60)
    # One user name under two hashes (a hand-edited profile): the password picks the login.
    assert await checker.check("customer", b"right") == records[0]
    assert await checker.check("customer", b"other") == records[1]
    assert await checker.check("kunde-ü", b"right") == records[2]  # UTF-8 names do not crash
    assert await checker.check("kunde-\udcff", b"right") is None
    # The cache remembers the password, never the scope: a profile change is seen at once.
    records[0] = Credential("customer", HASH, frozenset({"support@example.com", "x@example.com"}))
    found = await checker.check("customer", b"right")
    assert found is not None and found.scope == records[0].scope


def test_inbound_credentials_are_scoped_to_the_entries_holding_them() -> None:
    other = hash_password("other")
    text = "version = 1\n" + "".join(
        f'[[addresses]]\naddress = "{a}"\nmode = "bidirectional"\n'
        '[addresses.outbound]\nhost = "m.example.com"\nusername = "u"\nsecret = "env:X"\n'
        f'[addresses.inbound]\nusername = "{u}"\npassword_hash = "{h}"\n'
        for a, u, h in (
            ("Support@Example.com", "a", HASH),
            ("sales@example.com", "b", HASH),
            ("help@example.com", "a", HASH),
            ("desk@example.com", "a", other),
        )
    )
    profile = parse_profile(Path("p.toml"), text.encode())
    config = build_config(profile, Path("."))
    assert config.inbound_credentials() == [
        Credential("a", HASH, frozenset({"support@example.com", "help@example.com"})),
        Credential("b", HASH, frozenset({"sales@example.com"})),
        Credential("a", other, frozenset({"desk@example.com"})),
    ]
    route = config.route_for("SUPPORT@example.com")
    assert route is not None and config.inbound_credentials()[0].covers(route)
    assert not config.inbound_credentials()[1].covers(route)
    assert config.submission_credentials() == []


def test_log_lines_are_key_value_and_quote_spaces() -> None:
    line = format_event(
        "auth.failed", {"client": "192.0.2.1", "reason": 'bad "pw" here', "x": None}
    )
    assert line == 'event=auth.failed client=192.0.2.1 reason="bad \\"pw\\" here" x=-'


# -- sinks ----------------------------------------------------------------------------------------


def _item() -> SinkItem:
    return SinkItem(
        "0001.abcd",
        "a@x.test",
        "support@example.com",
        b"Subject: s\r\n\r\nbody\r\n",
        {"tag": "authenticated", "mode": "bidirectional"},
    )


async def test_maildir_sink_writes_lf_and_never_duplicates_a_redelivery(tmp_path: Path) -> None:
    config = build_config(profile(sink=f'path = "{tmp_path / "md"}"'), tmp_path)
    sink = MaildirSink(config.sink, config.sink_context)
    await sink.deliver(_item())
    await sink.deliver(_item())  # as after a crash before the spool forgot it
    files = list((tmp_path / "md" / "new").iterdir())
    assert len(files) == 1
    assert files[0].read_bytes().startswith(b"Return-Path: <a@x.test>\nDelivered-To: support@")
    files[0].rename(tmp_path / "md" / "cur" / (files[0].name + ":2,S"))
    await sink.deliver(_item())
    assert list((tmp_path / "md" / "new").iterdir()) == []


@pytest.mark.parametrize(("code", "permanent"), [(75, False), (67, True)])
async def test_pipe_sink_exit_75_means_retry(tmp_path: Path, code: int, permanent: bool) -> None:
    script = (
        f"import sys,os; sys.stdin.read(); sys.exit({code} if os.environ['SMTPCONN_TAG'] else 0)"
    )
    command = f'command = ["{sys.executable}", "-c", "{script}"]'
    config = build_config(profile(kind="pipe", sink=command), tmp_path)
    with pytest.raises(SinkError) as failure:
        await PipeSink(config.sink, config.sink_context).deliver(_item())
    assert failure.value.permanent is permanent


# -- bounces --------------------------------------------------------------------------------------


@dataclass
class FakeOutcome:
    recipient: str
    accepted: bool
    permanent: bool
    code: int | None
    text: str


@dataclass
class FakeResult:
    recipients: list[Any]


async def test_5xx_bounces_into_the_inbound_spool_and_4xx_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s3cret")
    config = build_config(profile(), tmp_path)
    spool = Spool(config.spool_dir)
    spool.create()
    spool.put(
        Envelope(
            "outbound",
            "support@example.com",
            ("gone@y.test", "later@y.test", "ok@y.test"),
            time.time(),
        ),
        b"From: support@example.com\r\nSubject: re\r\n\r\nanswer\r\n",
    )
    seen: list[tuple[str, list[str]]] = []

    async def deliverer(
        server: Any, secret: str, mail_from: str, rcpts: list[str], message: bytes, **_: Any
    ) -> FakeResult:
        seen.append((secret, list(rcpts)))
        return FakeResult(
            [
                FakeOutcome("gone@y.test", False, True, 550, "5.1.1 <gone@y.test>: unknown user"),
                FakeOutcome("later@y.test", False, False, 451, "4.3.0 try later"),
                FakeOutcome("ok@y.test", True, False, 250, "queued"),
            ][: len(rcpts)]
            if len(rcpts) == 3
            else [FakeOutcome("later@y.test", True, False, 250, "ok")]
        )

    woken: list[str] = []
    delivery = OutboundDelivery(
        config,
        spool,
        deliverer,
        None,  # type: ignore[arg-type]
        lambda direction, entries: woken.extend(f"{direction}:{e.id}" for e in entries),
    )
    entry = next(spool.entries("outbound"))
    await delivery(entry)
    bounce = next(spool.entries("inbound"))
    raw = spool.message(bounce)
    assert b"Final-Recipient: rfc822; gone@y.test" in raw and b"Status: 5.1.1" in raw
    assert b"origin=relay-dsn" in raw and bounce.envelope.mail_from == ""
    assert bounce.envelope.rcpts == ("support@example.com",)
    state = spool.state(entry)
    assert state.attempts == 1 and state.next_attempt > time.time()
    assert sorted(state.done) == ["gone@y.test", "ok@y.test"]
    await delivery(entry)  # the retry only tries what is left
    assert seen[1] == ("s3cret", ["later@y.test"])
    assert list(spool.entries("outbound")) == []
    assert woken == [f"inbound:{bounce.id}"]


async def test_retry_window_end_bounces_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTPCONN_UNIT_SECRET", "s")
    config = build_config(profile(), tmp_path)
    spool = Spool(config.spool_dir)
    spool.create()
    spool.put(
        Envelope("outbound", "support@example.com", ("r@y.test",), time.time() - 3600),
        b"S: x\r\n\r\n",
    )

    async def down(*_: Any, **__: Any) -> FakeResult:
        return FakeResult([FakeOutcome("r@y.test", False, False, None, "connection refused")])

    clock = {"now": time.time()}
    delivery = OutboundDelivery(
        config,
        spool,
        down,
        None,  # type: ignore[arg-type]
        lambda _d, _e: None,
        clock=lambda: clock["now"],
    )
    entry = next(spool.entries("outbound"))
    # Submitted an hour ago (window: 60 s), but the window starts at the first real failure.
    start = clock["now"]
    while list(spool.entries("outbound")):
        assert clock["now"] - start < 200, "never bounced"
        await delivery(entry)
        clock["now"] = max(clock["now"], spool.state(entry).next_attempt)  # retried when due
    assert 60 < clock["now"] - start < 130
    assert b"Status: 4.4.7" in spool.message(next(spool.entries("inbound")))
    await asyncio.sleep(0)


@pytest.mark.parametrize("kind", ["maildir", "webhook", "pipe", "smtp"])
def test_example_sink_configurations_are_valid(kind: str) -> None:
    path = Path(__file__).resolve().parents[3] / "examples" / "relay" / f"{kind}.toml"
    loaded = parse_profile(path, path.read_bytes())
    assert loaded.relay is not None and loaded.relay.sink.kind == kind


def test_queue_cli_lists_retries_and_deletes(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from smtpconn.cli.app import app

    spool = Spool(tmp_path / "s")
    spool.create()
    spool.put(Envelope("outbound", "support@example.com", ("r@y.test",), 1.0), b"S: x\r\n\r\n")
    entry = next(spool.entries("outbound"))
    state = spool.state(entry)
    state.held, state.attempts = True, 2
    spool.save_state(entry, state)
    runner = CliRunner()
    listed = runner.invoke(app, ["queue", "list", "--spool", str(tmp_path / "s"), "--json"])
    assert listed.exit_code == 0
    [item] = json.loads(listed.stdout)["messages"]
    assert item["id"] == entry.id and item["status"] == "held"
    retried = runner.invoke(app, ["queue", "retry", entry.id, "--spool", str(tmp_path / "s")])
    assert retried.exit_code == 0 and not spool.state(entry).held
    missing = runner.invoke(app, ["queue", "delete", "nope", "--spool", str(tmp_path / "s")])
    assert missing.exit_code == 2
    deleted = runner.invoke(app, ["queue", "delete", "--all", "--spool", str(tmp_path / "s")])
    assert deleted.exit_code == 0 and list(spool.entries("outbound")) == []


async def test_only_possible_redeliveries_ask_the_sink_to_look_for_a_copy(tmp_path: Path) -> None:
    from smtpconn.relay.handover import SinkHandover
    from smtpconn.relay.spool import RetryState

    config = build_config(profile(), tmp_path)
    spool = Spool(config.spool_dir)
    spool.create()
    old = spool.put_many([(Envelope("inbound", "a@x.test", ("r@x.test",), 1.0), b"m", None)])
    seen: dict[str, bool] = {}

    class Recorder:
        kind = "recorder"

        async def deliver(self, item: SinkItem) -> None:
            seen[item.id] = item.maybe_delivered

    handover = SinkHandover(config, spool, Recorder())
    fresh, retried = spool.put_many(
        [(Envelope("inbound", "a@x.test", ("r@x.test",), time.time()), b"m", None)] * 2
    )
    spool.save_state(retried, RetryState(attempts=1))
    for entry in (*old, fresh, retried):
        await handover(entry)
    # Spooled by an earlier run or tried before: may already be at the sink. Fresh: cannot be.
    assert seen == {old[0].id: True, fresh.id: False, retried.id: True}


async def test_verified_password_cache_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import smtpconn.relay.server as server

    calls: list[str] = []
    monkeypatch.setattr(server, "verify_password", lambda p, e: calls.append(p) or p == "right")
    clock = [1000.0]
    checker = CredentialChecker(
        lambda: [CUSTOMER], failures_allowed=5, window=60, clock=lambda: clock[0]
    )
    assert await checker.check("customer", b"right")
    clock[0] += server.SUCCESS_CACHE_TTL - 1
    assert await checker.check("customer", b"right")
    assert calls == ["right"]  # within the TTL: the keyed digest answers
    clock[0] += 2
    assert await checker.check("customer", b"right")
    assert calls == ["right", "right"]  # expired: scrypt again, then cached anew
    assert not await checker.check("customer", b"wrong")
    assert len(checker._good) == 1


def test_bounce_status_comes_from_the_server_reply() -> None:
    """One enhanced-status parser (reply_catalogue.enhanced_code): the DSN's status is the
    server's 5.x.x, taken from its reply even when the outcome's text is our own message."""
    from types import SimpleNamespace

    from smtpconn.relay.outbound import _status
    from smtpconn.smtp.replies import Reply

    def outcome(code: int | None, text: str) -> Any:
        return SimpleNamespace(code=code, text=text)

    no_failure = SimpleNamespace(failure=None)
    assert _status(outcome(550, "5.1.1 <x@example.com>: User unknown"), no_failure) == "5.1.1"
    assert _status(outcome(550, "User unknown"), no_failure) == "5.0.0"
    assert _status(outcome(None, "connection refused"), no_failure) == "5.0.0"
    assert _status(outcome(None, "10.5.1.2:587 refused the connection"), no_failure) == "5.0.0"
    smtputf8 = outcome(None, "mx:587 does not offer SMTPUTF8 (5.6.7), which ...")
    assert _status(smtputf8, no_failure) == "5.6.7"
    refused = SimpleNamespace(failure=SimpleNamespace(reply=Reply(554, ("5.7.1 Rejected",))))
    assert _status(outcome(554, "mx refused DATA: 554 5.7.1 Rejected"), refused) == "5.7.1"
