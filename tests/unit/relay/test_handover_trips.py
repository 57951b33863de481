"""The inbound hand-over's worker-thread trips: the first hand-over of a message this process
just spooled takes its bytes from memory (bounded), and the Maildir sink (here without its
delivery agent) removes the spool entry in the thread that wrote its copy; a failed removal is
raised, never taken for the sink's failure."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from smtpconn.relay import spool as spool_module
from smtpconn.relay.config import build_config
from smtpconn.relay.handover import SinkHandover
from smtpconn.relay.sinks.maildir import MaildirSink
from smtpconn.relay.spool import Envelope, Spool
from tests.unit.relay.test_relay_units import profile

MESSAGE = b"From: <a@x.test>\r\nSubject: s\r\n\r\nbody\r\n"


def _envelope() -> Envelope:
    return Envelope("inbound", "a@x.test", ("support@example.com",), time.time())


def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.create()
    return spool


def test_kept_bytes_are_the_files_and_taken_once(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (entry,) = spool.put_many([(_envelope(), MESSAGE, None)], keep=True)
    (plain,) = spool.put_many([(_envelope(), MESSAGE, None)])
    assert spool.take_fresh(entry) == spool.message(entry) == MESSAGE
    assert spool.take_fresh(entry) is None  # the next attempt reads the file
    assert spool.take_fresh(plain) is None  # not kept without keep=True (outbound)


def test_kept_bytes_are_bounded_and_forgotten_on_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "FRESH_BYTES_MAX", 2 * len(MESSAGE))
    monkeypatch.setattr(spool_module, "FRESH_MESSAGE_MAX", len(MESSAGE))
    spool = _spool(tmp_path)
    big = spool.put_many([(_envelope(), MESSAGE + b"x", None)], keep=True)[0]
    first, second, third = spool.put_many([(_envelope(), MESSAGE, None)] * 3, keep=True)
    assert spool.take_fresh(big) is None  # over the per-message limit
    assert spool.take_fresh(first) is None  # the oldest went when the third came
    spool.remove(second)
    assert spool.take_fresh(second) is None
    assert spool.take_fresh(third) == MESSAGE


def _handover(tmp_path: Path) -> tuple[SinkHandover, Spool, Path]:
    """The hand-over as it is before the Maildir delivery agent runs (or where it cannot:
    test_maildir_agent.py has the agent's own trips)."""
    config = build_config(profile(sink=f'path = "{tmp_path / "md"}"'), tmp_path)
    spool = Spool(config.spool_dir)
    spool.create()
    sink = MaildirSink(config.sink, config.sink_context)
    sink.agent.usable = lambda: False  # type: ignore[method-assign]
    return (
        SinkHandover(config, spool, sink),
        spool,
        (tmp_path / "md" / "new"),
    )


async def test_a_fresh_message_is_handed_over_in_one_thread_trip(
    tmp_path: Path, trips: list[str]
) -> None:
    handover, spool, new = _handover(tmp_path)
    (entry,) = spool.put_many([(_envelope(), MESSAGE, None)], keep=True)
    outcome = await handover(entry)
    assert outcome.state is None
    assert trips == ["_deliver_then"]
    assert not entry.path.exists() and spool.ids("inbound") == []
    (copy,) = new.iterdir()
    assert copy.read_bytes().endswith(b"Subject: s\n\nbody\n")


async def test_a_message_spooled_before_is_read_back(tmp_path: Path, trips: list[str]) -> None:
    handover, spool, new = _handover(tmp_path)
    (entry,) = spool.put_many([(_envelope(), MESSAGE, None)])
    await handover(entry)
    assert trips == ["message_and_state", "_deliver_then"]
    assert len(list(new.iterdir())) == 1 and spool.ids("inbound") == []


async def test_a_failed_removal_is_raised_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handover, spool, new = _handover(tmp_path)
    (entry,) = spool.put_many([(_envelope(), MESSAGE, None)], keep=True)

    def refuse(*_: Any, **__: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(spool, "remove", refuse)
    with pytest.raises(PermissionError):
        await handover(entry)
    assert len(list(new.iterdir())) == 1  # the sink holds it
    assert not entry.path.with_suffix(".state").exists()  # not recorded as a sink failure


def test_kept_bytes_never_deliver_a_message_deleted_by_another_process(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    (entry,) = spool.put_many([(_envelope(), MESSAGE, None)], keep=True)
    # `smtpconn queue delete` opens the spool on its own and removes the file.
    admin = Spool(tmp_path / "spool")
    found = admin.find(entry.id)
    assert found is not None
    admin.remove(found)
    assert spool.take_fresh(entry) is None  # the delivery then finds no file and drops it
