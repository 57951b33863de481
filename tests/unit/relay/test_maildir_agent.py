"""The Maildir delivery agent: a real child process (no doubles), driven through the hand-over
as the relay drives it, and attacked with frames the relay never sends."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smtpconn.relay import agent as agent_module
from smtpconn.relay.config import build_config
from smtpconn.relay.handover import SinkHandover
from smtpconn.relay.sinks import agent_client
from smtpconn.relay.sinks.agent_client import agent_command
from smtpconn.relay.sinks.maildir import MaildirSink
from smtpconn.relay.spool import Envelope, RetryState, Spool, SpoolEntry
from tests.unit.relay.test_relay_units import profile

MESSAGE = b"From: <a@x.test>\r\nSubject: s\r\n\r\nbody\r\n"


def _envelope() -> Envelope:
    return Envelope("inbound", "a@x.test", ("support@example.com",), time.time())


class _Desk:
    def __init__(self, tmp_path: Path) -> None:
        config = build_config(profile(sink=f'path = "{tmp_path / "md"}"'), tmp_path)
        self.spool = Spool(config.spool_dir)
        self.spool.create()
        self.spool.lock()  # as the relay holds it: copies go through slots
        self.sink = MaildirSink(config.sink, config.sink_context)
        self.handover = SinkHandover(config, self.spool, self.sink)
        self.new = tmp_path / "md" / "new"

    def spooled(self, count: int = 1) -> list[SpoolEntry]:
        return self.spool.put_many([(_envelope(), MESSAGE, None)] * count, keep=True)

    async def agent_running(self) -> int:
        """Hand over one message (through a worker thread: it starts the agent), then wait for
        the agent; its pid."""
        if self.sink.agent.pid is None:
            (entry,) = self.spooled()
            await self.handover(entry)
        deadline = time.monotonic() + 10
        while not self.sink.agent.usable():
            assert time.monotonic() < deadline, "the agent did not start"
            await asyncio.sleep(0.01)
        pid = self.sink.agent.pid
        assert pid is not None
        return pid

    def copies(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.new.iterdir())]


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[_Desk]:
    desk = _Desk(tmp_path)
    yield desk
    await desk.sink.aclose()
    desk.spool.unlock()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_the_agent_makes_the_copy_and_removes_every_spool_name(desk: _Desk) -> None:
    pid = await desk.agent_running()
    entries = desk.spooled(20)
    slots = [desk.spool.directory / "slots" / e.slot for e in entries if e.slot]
    assert len(slots) == 20 and all(s.exists() for s in slots)  # unsettled: a second name
    outcomes = await asyncio.gather(*(desk.handover(e) for e in entries))
    assert all(o.state is None for o in outcomes)
    assert desk.spool.ids("inbound") == []
    assert not any(s.exists() for s in slots)
    assert list((desk.new.parent / "tmp").iterdir()) == []
    copies = desk.copies()
    assert len(copies) == 21 and all(c.endswith(b"Subject: s\n\nbody\n") for c in copies)
    assert desk.sink.agent.pid == pid  # the same agent served them all
    await desk.sink.aclose()
    assert _gone(pid)


async def test_with_the_agent_running_a_hand_over_takes_no_worker_thread(
    desk: _Desk, trips: list[str]
) -> None:
    await desk.agent_running()
    trips.clear()
    (entry,) = desk.spooled()
    await desk.handover(entry)
    assert trips == []
    assert len(desk.copies()) == 2 and desk.spool.ids("inbound") == []


async def test_a_retry_is_made_by_a_worker_thread_which_looks_for_a_copy_first(
    desk: _Desk, trips: list[str]
) -> None:
    await desk.agent_running()
    (entry,) = desk.spool.put_many([(_envelope(), MESSAGE, None)])
    desk.spool.save_state(entry, RetryState(attempts=1))  # the sink may hold it already
    trips.clear()
    await desk.handover(entry)
    assert trips == ["message_and_state", "_deliver_then"]


async def test_an_agent_killed_mid_stream_loses_and_doubles_nothing(
    desk: _Desk, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_client, "RESTART_FIRST", 0.05)
    caplog.set_level(logging.INFO, logger="smtpconn.relay")
    pid = await desk.agent_running()
    entries = desk.spooled(40)
    handovers = [asyncio.ensure_future(desk.handover(e)) for e in entries]
    await asyncio.sleep(0)  # the requests are on their way
    os.kill(pid, signal.SIGKILL)
    outcomes = await asyncio.gather(*handovers)
    assert all(o.state is None for o in outcomes)
    assert desk.spool.ids("inbound") == []
    names = sorted(p.name for p in desk.new.iterdir())
    assert len(names) == len(set(names)) == 41  # each message exactly once
    assert f"event=relay.agent-exited pid={pid} code=-9" in caplog.text
    # After the back-off a new agent takes over.
    deadline = time.monotonic() + 10
    while not desk.sink.agent.usable():
        assert time.monotonic() < deadline, "no new agent"
        await asyncio.sleep(0.02)
    (entry,) = desk.spooled()
    await desk.handover(entry)
    assert len(desk.copies()) == 42


async def test_a_copy_the_agent_cannot_make_is_retried_and_the_entry_kept(desk: _Desk) -> None:
    await desk.agent_running()
    tmp = desk.new.parent / "tmp"
    tmp.rmdir()  # the help desk's cleanup took the folder away
    (entry,) = desk.spooled()
    outcome = await desk.handover(entry)
    assert outcome.state is not None and outcome.state.attempts == 1
    assert "No such file or directory" in (outcome.state.last_error or "")
    assert desk.spool.ids("inbound") == [entry.id]
    assert len(desk.copies()) == 1
    # The retry (a worker thread) recreates the folders and delivers it once.
    again = desk.spool.find(entry.id)
    assert again is not None
    assert (await desk.handover(again)).state is None
    assert len(desk.copies()) == 2 and desk.spool.ids("inbound") == []


async def test_a_failed_removal_is_raised_not_taken_for_the_sinks(desk: _Desk) -> None:
    await desk.agent_running()
    (entry,) = desk.spooled()
    entry.path.with_suffix(".state").mkdir()  # unlink() of a folder fails (EISDIR)
    with pytest.raises(OSError) as raised:
        await desk.handover(entry)
    assert raised.value.errno in (21, 1)  # EISDIR (Linux), EPERM elsewhere
    assert len(desk.copies()) == 2  # the sink holds it
    assert not entry.path.exists()  # removed up to the name that failed


async def test_closing_waits_for_what_was_sent(desk: _Desk) -> None:
    pid = await desk.agent_running()
    entries = desk.spooled(10)
    handovers = [asyncio.ensure_future(desk.handover(e)) for e in entries]
    await asyncio.sleep(0)
    await desk.sink.aclose()
    outcomes = await asyncio.gather(*handovers)
    assert all(o.state is None for o in outcomes)
    assert len(desk.copies()) == 11 and _gone(pid)
    assert not desk.sink.agent.usable()  # closed: never started again


async def test_closing_does_not_hang_on_an_agent_that_stopped_answering(
    desk: _Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_client, "STOP_WAIT", 0.3)
    pid = await desk.agent_running()
    os.kill(pid, signal.SIGSTOP)  # as if stuck in a sync that never returns
    (entry,) = desk.spooled()
    handover = asyncio.ensure_future(desk.handover(entry))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await desk.sink.aclose()
    assert time.monotonic() - started < 5 and _gone(pid)
    outcome = await handover  # the agent's death sent it to a worker thread
    assert outcome.state is None and len(desk.copies()) == 2


# -- frames the relay never sends ----------------------------------------------------------


class _Child:
    """The agent process on its own, with our end of its socket."""

    def __init__(self) -> None:
        self.sock, child = socket.socketpair()
        self.proc = subprocess.Popen(
            agent_command(child.fileno()), pass_fds=(child.fileno(),), stderr=subprocess.PIPE
        )
        child.close()
        self.sock.settimeout(10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def finish(self) -> tuple[int, bytes, bytes]:
        """(exit code, everything it answered, what it printed)."""
        self.sock.shutdown(socket.SHUT_WR)
        answered = b""
        while chunk := self.sock.recv(65536):
            answered += chunk
        self.sock.close()
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, answered, err


def _frame(header: Any, body: bytes = b"") -> bytes:
    import json

    data = json.dumps(header).encode()
    return struct.pack("!II", len(data), len(body)) + data + body


def _request(tmp_path: Path, name: str, **extra: Any) -> dict[str, Any]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "new").mkdir(exist_ok=True)
    return {
        "n": 1,
        "tmp": str(tmp_path / "tmp" / name),
        "final": str(tmp_path / "new" / name),
        "unlink": [],
        **extra,
    }


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack("!II", agent_module.MAX_HEADER + 1, 0),
        struct.pack("!II", 10, agent_module.MAX_BODY + 1),
        struct.pack("!II", 9, 0) + b"not json!",
        _frame(["n", 1]),
        _frame({"n": "1", "tmp": "a", "final": "b", "unlink": []}),
        _frame({"n": 1, "tmp": "a", "final": "b", "unlink": "c"}),
        _frame({"n": 1, "tmp": "a", "final": "b"}),
    ],
    ids=[
        "header-too-big",
        "body-too-big",
        "not-json",
        "not-an-object",
        "n-text",
        "unlink-text",
        "no-unlink",
    ],
)
def test_a_frame_that_is_not_the_protocols_ends_the_agent(garbage: bytes, tmp_path: Path) -> None:
    child = _Child()
    child.send(garbage + _frame(_request(tmp_path, "after"), b"x"))
    code, answered, printed = child.finish()
    assert (code, answered, printed) == (2, b"", b"")
    assert not (tmp_path / "new" / "after").exists()


def test_a_stream_cut_mid_frame_writes_nothing(tmp_path: Path) -> None:
    child = _Child()
    child.send(_frame(_request(tmp_path, "cut"), b"0123456789")[:-3])
    code, answered, printed = child.finish()
    assert (code, answered, printed) == (0, b"", b"")
    assert list((tmp_path / "new").iterdir()) == list((tmp_path / "tmp").iterdir()) == []


def test_bad_paths_are_answered_as_errors_and_remove_nothing(tmp_path: Path) -> None:
    keep = tmp_path / "spool-entry"
    keep.write_bytes(b"queued")
    child = _Child()
    child.send(
        _frame(_request(tmp_path, "nul\x00name", unlink=[str(keep)]), b"x")
        + _frame({**_request(tmp_path, "x"), "n": 2, "tmp": str(tmp_path / "none" / "x")}, b"y")
        + _frame({**_request(tmp_path, "fine"), "n": 3, "unlink": [str(keep)]}, b"z")
    )
    code, answered, printed = child.finish()
    assert (code, printed) == (0, b"")
    replies = []
    while answered:
        header_size, body_size = struct.unpack("!II", answered[:8])
        replies.append(agent_module.decode_header(answered[8 : 8 + header_size]))
        answered = answered[8 + header_size + body_size :]
    assert [r["n"] for r in replies] == [1, 2, 3]
    assert replies[0]["error"] and replies[1]["error"] == "No such file or directory"
    assert replies[2] == {"n": 3, "error": None, "unlink_error": None}
    assert (tmp_path / "new" / "fine").read_bytes() == b"z" and not keep.exists()


def test_signals_for_the_relays_terminal_do_not_cut_it_short(tmp_path: Path) -> None:
    child = _Child()
    child.send(_frame(_request(tmp_path, "one"), b"1"))
    assert len(child.sock.recv(65536)) > 8  # it is serving
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        child.proc.send_signal(signum)
    child.send(_frame({**_request(tmp_path, "two"), "n": 2}, b"2"))
    code, answered, printed = child.finish()
    assert (code, printed) == (0, b"") and answered
    assert (tmp_path / "new" / "two").read_bytes() == b"2"


async def test_an_agent_that_cannot_start_leaves_delivery_to_worker_threads(
    desk: _Desk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpconn.relay")
    monkeypatch.setattr(agent_client, "agent_command", lambda fd: ["/nonexistent/python", str(fd)])
    for entry in desk.spooled(3):
        await desk.handover(entry)
        await asyncio.sleep(0.05)
    assert len(desk.copies()) == 3 and desk.spool.ids("inbound") == []
    assert "event=relay.agent-failed" in caplog.text and desk.sink.agent.pid is None


def test_the_agent_runs_the_relays_own_code() -> None:
    command = agent_command(7)
    assert command[1:3] == ["-I", "-c"] and command[-1] == "7"
    assert Path(command[-2]) == Path(agent_module.__file__).resolve().parents[2]
