"""FreshReplies: a just-submitted reply's bytes for its first delivery attempt, bounded."""

from __future__ import annotations

import time

import pytest

from smtpconn.relay.outbound import FreshReplies


def test_a_reply_is_taken_once() -> None:
    fresh = FreshReplies()
    fresh.put("a", b"message")
    assert fresh.take("a") == b"message"
    assert fresh.take("a") is None  # a retry reads the spool


def test_bounded_in_bytes_and_count() -> None:
    fresh = FreshReplies(max_bytes=10, max_count=2)
    fresh.put("a", b"12345")
    fresh.put("b", b"123456")  # would pass 10 bytes: not kept
    fresh.put("c", b"1")
    fresh.put("d", b"1")  # a third entry: not kept
    assert [fresh.take(i) for i in "abcd"] == [b"12345", None, b"1", None]
    fresh.put("e", b"1234567890")  # room again once taken
    assert fresh.take("e") == b"1234567890"


def test_an_old_reply_is_read_from_the_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    fresh = FreshReplies(max_age=10, max_count=1)
    fresh.put("held", b"x")  # e.g. held, or waiting for its lane
    now[0] += 11
    assert fresh.take("held") is None
    fresh.put("old", b"y")
    now[0] += 11
    fresh.put("new", b"z")  # the expired one made room
    assert fresh.take("old") is None and fresh.take("new") == b"z"
