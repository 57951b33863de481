"""``[relay] processes``: the count (number or auto), each process's share of the limits, the
child's role in its environment, the event lines a child writes to the main, and the spool's
shards as ``queue`` sees them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from smtpconn.errors import UsageError
from smtpconn.profile.model import Profile, RelaySettings
from smtpconn.relay.config import (
    AUTO_PROCESSES_MAX,
    RelayOverrides,
    build_config,
    resolve_processes,
    share,
)
from smtpconn.relay.queue import delete, list_queue, retry
from smtpconn.relay.runtime import Relay
from smtpconn.relay.shards import (
    ShardRole,
    decode_event,
    encode_event,
    forget_shard_env,
    holds_mail,
    shard_dir,
    shard_dirs,
    shard_env,
    shard_role_from_env,
    spool_family,
)
from smtpconn.relay.spool import KICK, Envelope, Spool


@pytest.mark.parametrize(
    ("value", "cpus", "expected"),
    [
        (1, 8, 1),
        (3, 1, 3),
        ("2", 8, 2),
        (" 5 ", 8, 5),
        ("auto", 2, 2),
        ("auto", 64, 4),
        ("auto", 1, 1),
    ],
)
def test_the_process_count(value: int | str, cpus: int, expected: int) -> None:
    assert resolve_processes(value, cpus) == expected
    assert AUTO_PROCESSES_MAX == 4


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "", "٣"])
def test_a_bad_process_count_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match='must be a positive integer or "auto"'):
        resolve_processes(value, 4)


def test_the_option_overrides_the_profile(tmp_path: Path) -> None:
    profile = Profile(relay=RelaySettings(processes=3))
    assert build_config(profile, tmp_path).processes == 3
    config = build_config(profile, tmp_path, overrides=RelayOverrides(processes="auto"))
    assert 1 <= config.processes <= AUTO_PROCESSES_MAX
    assert build_config(Profile(), tmp_path).processes == 1


@pytest.mark.parametrize(
    ("limit", "processes", "each"), [(20, 1, 20), (20, 2, 10), (5, 2, 3), (500, 3, 167), (1, 4, 1)]
)
def test_each_process_takes_its_share_rounded_up(limit: int, processes: int, each: int) -> None:
    assert share(limit, processes) == each
    assert each * processes >= limit > (each - 1) * processes


def test_the_relay_divides_its_limits_only_when_it_runs_children(tmp_path: Path) -> None:
    relay = RelaySettings(processes=2, max_sessions=500, max_memory=100 * 1024 * 1024)
    config = build_config(Profile(relay=relay), tmp_path)
    alone = Relay(config)  # no way to start children (library use): the whole budget
    assert (alone.process_count, alone.limits.max_sessions) == (1, 500)
    main = Relay(config, shard_command=["true"])
    child = Relay(config, shard=ShardRole(1, (3,)))
    for process in (main, child):
        assert process.process_count == 2
        assert process.limits.max_sessions == 250
        assert process.limits.max_memory == 50 * 1024 * 1024
    assert child.spool.directory == shard_dir(config.spool_dir, 1)
    assert main.spool.directory == config.spool_dir


def test_a_share_of_memory_never_below_one_largest_message(tmp_path: Path) -> None:
    relay = RelaySettings(
        processes=4, max_memory=30 * 1024 * 1024, max_message_size=25 * 1024 * 1024
    )
    config = build_config(Profile(relay=relay), tmp_path)
    assert Relay(config, shard_command=["true"]).limits.max_memory == 25 * 1024 * 1024


def test_the_role_travels_in_the_environment() -> None:
    roles = (ShardRole(1, (3,)), ShardRole(3, (3, 4), (5,)), ShardRole(5, drain=True))
    for role in roles:
        # shard_env names this process as the parent: as the child sees it
        assert shard_role_from_env(shard_env(role), parent_pid=os.getpid()) == role
    assert roles[1].pass_fds == (3, 4, 5)
    assert shard_role_from_env({}) is None


@pytest.mark.parametrize(
    "environ",
    [
        {"SMTPCONN_SHARD": "1"},  # a left-over export: no parent named
        {"SMTPCONN_SHARD": "1", "SMTPCONN_SHARD_PARENT": "1"},  # another process's child
        {"SMTPCONN_SHARD": "one", "SMTPCONN_SHARD_PARENT": str(os.getpid())},
        {"SMTPCONN_SHARD": "0", "SMTPCONN_SHARD_PARENT": str(os.getpid())},
    ],
)
def test_a_role_this_process_was_not_given_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(UsageError) as refused:
        shard_role_from_env(environ, parent_pid=os.getpid())
    assert "SMTPCONN_SHARD" in refused.value.message
    assert refused.value.fix is not None and "unset SMTPCONN_SHARD" in refused.value.fix


def test_the_role_variables_are_forgotten_once_read() -> None:
    environ = {**shard_env(ShardRole(2, (3,))), "PATH": "/bin", "SMTPCONN_PROFILE": "p.toml"}
    forget_shard_env(environ)
    assert environ == {"PATH": "/bin", "SMTPCONN_PROFILE": "p.toml"}


def test_an_event_line_is_one_json_safe_ascii_line() -> None:
    line = encode_event(
        "inbound.accepted",
        {
            "id": "1.a",
            "size": 12,
            "delay": 0.25,
            "tls": None,
            "ok": True,
            "path": Path("/x"),
            "client": "evil\r\nevent=forged\x1b",
        },
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert b"\r" not in line and b"\x1b" not in line
    event, fields = decode_event(line) or ("", {})
    assert event == "inbound.accepted"
    assert fields == {
        "id": "1.a",
        "size": 12,
        "delay": 0.25,
        "tls": None,
        "ok": True,
        "path": "/x",
        "client": "evil\r\nevent=forged\x1b",
    }


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage\n",
        b"[1,2]\n",
        b'{"event": 3, "fields": {}}\n',
        b'{"event": "x"}\n',
        json.dumps({"event": "x", "fields": []}).encode(),
        b"\xff\xfe\n",
    ],
)
def test_anything_else_on_the_pipe_is_ignored(line: bytes) -> None:
    assert decode_event(line) is None


def _put(spool: Spool, rcpt: str) -> str:
    spool.create()
    return spool.put(
        Envelope("inbound", "a@b.example", (rcpt,), time.time()), b"Subject: x\r\n\r\nx\r\n"
    )


def test_queue_sees_and_acts_on_every_shard(tmp_path: Path) -> None:
    main = Spool(tmp_path / "spool")
    in_main = _put(main, "one@c.example")
    shard = Spool(shard_dir(main.directory, 2))
    in_shard = _put(shard, "two@c.example")
    (main.directory / "shards" / "not-a-number").mkdir()
    assert [k for k, _ in shard_dirs(main.directory)] == [2]
    assert [s.directory for s in spool_family(main)] == [main.directory, shard.directory]
    assert {i.entry.id for i in list_queue(main)} == {in_main, in_shard}

    assert retry(main, [in_shard[-8:]]) == [in_shard]
    assert (shard.directory / KICK).exists() and not (main.directory / KICK).exists()
    assert shard.state(shard.find(in_shard)).next_attempt > 0  # type: ignore[arg-type]

    assert holds_mail(shard.directory)
    assert delete(main, [in_shard]) == [in_shard]
    assert not holds_mail(shard.directory)
    assert [i.entry.id for i in list_queue(main)] == [in_main]
