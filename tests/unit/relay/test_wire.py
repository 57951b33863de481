"""The listeners' wire rules as pure functions: control characters in envelopes, and DATA
assembly (end marker, dot un-stuffing, bare newlines, limits)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpconn.errors import ProfileError
from smtpconn.profile.model import BareNewline, RelaySettings
from smtpconn.profile.store import load_profile, save_profile
from smtpconn.relay.wire import (
    BARE_NEWLINE_REFUSED,
    END_MARKER,
    LINE_TOO_LONG,
    MAIL_PATH_REFUSED,
    PARAMS_REFUSED,
    TOO_MUCH_DATA,
    DataReader,
    ReadStep,
    data_read_plan,
    envelope_refusal,
    simple_path,
)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("FROM:<a@b.example>", None),
        ("FROM:<a@b.example> SIZE=10 BODY=8BITMIME", None),
        ('FROM:<"x\rX-Tag: 1"@b.example>', MAIL_PATH_REFUSED),
        ('FROM:<"a>\r"@b.example> SIZE=1', MAIL_PATH_REFUSED),  # '>' inside quotes
        ("FROM:<a\x00b@b.example>", MAIL_PATH_REFUSED),
        ("FROM:<a\x7f@b.example>", MAIL_PATH_REFUSED),
        ("FROM:a\x01@b.example SIZE=1", MAIL_PATH_REFUSED),  # no angle brackets
        ("FROM:<a@b.example> SIZE=1\x0b", PARAMS_REFUSED),
        ("FROM:<a@b.example>\tSIZE=1", PARAMS_REFUSED),
        ("FROM\x01<a@b.example>", MAIL_PATH_REFUSED),  # no colon at all
    ],
)
def test_envelope_refusal(arg: str, expected: str | None) -> None:
    assert envelope_refusal(arg, path_reply=MAIL_PATH_REFUSED) == expected


def _read(data: bytes, *, normalize: bool = False, size_limit: int | None = None) -> DataReader:
    """Feed ``data`` as a stream reader would (pieces ending in LF), up to the end marker."""
    reader = DataReader(size_limit=size_limit, line_limit=1001, normalize=normalize)
    pieces = data.split(b"\n")
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        if reader.feed(piece if last else piece + b"\n"):
            assert b"\n".join(pieces[index + 1 :]) == b"", "data after the end marker"
            return reader
    raise AssertionError("no end marker")


def test_plain_message_is_unstuffed() -> None:
    reader = _read(b"Subject: x\r\n\r\n..dot\r\n.\r\n")
    assert reader.problem is None
    assert reader.content() == b"Subject: x\r\n\r\n.dot\r\n"


def test_empty_message() -> None:
    assert _read(b".\r\n").content() == b""


@pytest.mark.parametrize("marker", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"])
def test_bare_newline_markers_neither_end_nor_pass(marker: bytes) -> None:
    data = b"a" + marker + b"MAIL FROM:<x@y>\r\nsecond\r\n.\r\n"
    reader = _read(data)
    assert reader.problem == BARE_NEWLINE_REFUSED
    assert reader.content() == b""
    normalized = _read(data, normalize=True)
    assert normalized.problem is None
    content = normalized.content()
    assert b"second" in content and b"MAIL FROM" in content
    assert content.replace(b"\r\n", b"").count(b"\r") == 0
    assert content.replace(b"\r\n", b"").count(b"\n") == 0


def test_size_and_line_limits_answer_after_the_end() -> None:
    too_big = _read(b"x" * 50 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n", size_limit=100)
    assert too_big.problem == TOO_MUCH_DATA and too_big.held == 0
    reader = DataReader(size_limit=None, line_limit=10, normalize=False)
    assert not reader.feed(b"0123456789ab")  # a fragment longer than a line may be
    assert not reader.feed(b"cd\r\n")
    assert reader.feed(b".\r\n")
    assert reader.problem == LINE_TOO_LONG


def test_fragment_then_dot_line_is_not_the_end() -> None:
    reader = DataReader(size_limit=None, line_limit=1001, normalize=False)
    assert not reader.feed(b"abc")  # a line split by the stream limit
    assert not reader.feed(b".\r\n")  # continues that line: "abc.\r\n", not the end
    assert reader.feed(b".\r\n")
    assert reader.content() == b"abc.\r\n"


def test_relay_keys_parse_validate_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "version = 1\n[relay]\nmax_sessions = 7\nmax_memory = 123456789\n"
        'idle_timeout = 1.5\ndata_timeout = 30\nbare_newline = "normalize"\n'
    )
    relay = load_profile(path).profile.relay
    assert relay is not None
    assert (relay.max_sessions, relay.max_memory) == (7, 123456789)
    assert (relay.idle_timeout, relay.data_timeout) == (1.5, 30.0)
    assert relay.bare_newline is BareNewline.NORMALIZE
    save_profile(path, load_profile(path).profile)
    assert load_profile(path).profile.relay == relay
    assert RelaySettings().bare_newline is BareNewline.REJECT
    path.write_text(
        'version = 1\n[relay]\nmax_sessions = 0\nidle_timeout = -1\nbare_newline = "strip"\n'
    )
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    text = str(caught.value) + str(getattr(caught.value, "details", ""))
    for key in ("max_sessions", "idle_timeout", "bare_newline"):
        assert key in text


def test_max_memory_must_hold_one_largest_message(tmp_path: Path) -> None:
    from smtpconn.errors import UsageError
    from smtpconn.profile.model import Profile
    from smtpconn.relay.config import build_config

    relay = RelaySettings(max_memory=1000, max_message_size=2000)
    with pytest.raises(UsageError, match="max_memory"):
        build_config(Profile(relay=relay), tmp_path)


def _read_planned(stream: bytes, arrive: int, normalize: bool) -> tuple[DataReader, bytes]:
    """Read ``stream`` as the relay's DATA loop does (data_read_plan: HEAD, LINE, BULK), with
    the bytes arriving ``arrive`` at a time and a 16-byte stream limit; returns the reader and
    what was left unread for the command loop."""
    limit = 16
    reader = DataReader(size_limit=None, line_limit=40, normalize=normalize)
    pos, tail = 0, b"\r\n"
    while True:
        available = len(stream)  # grows by `arrive` until a read can be answered
        for got in range(min(len(stream), pos + arrive), len(stream) + arrive, arrive):
            available = min(got, len(stream))
            piece = _answer(stream[pos:available], data_read_plan(tail), limit)
            if piece is not None:
                break
        else:
            raise AssertionError("the loop waited for bytes that never come")
        assert piece, "an empty read"
        pos += len(piece)
        tail = (tail + piece)[-4:]
        if reader.feed(piece):
            return reader, stream[pos:]


def _answer(buffered: bytes, step: ReadStep, limit: int) -> bytes | None:
    """What StreamReader.readexactly/readuntil (+ read(consumed) on overrun) would return now,
    or None if it would wait for more bytes."""
    if step is ReadStep.HEAD:
        return buffered[:3] if len(buffered) >= 3 else None
    sep = b"\n" if step is ReadStep.LINE else END_MARKER
    found = buffered.find(sep)
    if found >= 0:
        return buffered[: found + len(sep)] if found <= limit else buffered[:found]
    consumed = len(buffered) + 1 - len(sep)
    return buffered[:consumed] if consumed > limit else None


STREAMS = [
    b".\r\n",
    b"\r\n.\r\n",
    b"a\r\n.\r\n",
    b".a\r\n..\r\n...\r\n.\r\n",
    b"Subject: x\r\n\r\n" + b"The fox. Over.\r\n" * 20 + b".\r\n",
    b"a\n.\nb\r\n.\r\n",
    b"a\r\n.\nb\r\n.\r\n",
    b"a\n.\r\nb\r\n.\r\n",
    b"a\r.\r\nb\r\n.\r\n",
    b"a\r\n.\rb\r\n.\r\n",
    b"x" * 45 + b"\r\nshort\r\n.\r\n",
    b"x" * 37 + b"\r\n" + b"y" * 38 + b"\r\n.\r\n",
    b"\r\r\n\r\n.\r\n",
    b"abc\r\r\n.\r\n",
    b"..\r\n.\r\n",
]


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("normalize", [False, True])
def test_planned_reads_match_line_reads(stream: bytes, normalize: bool) -> None:
    """Whole buffers and lines give the same message, problem and end, at every arrival size,
    and never read into what follows the end (pipelined commands)."""
    trailer = b"MAIL FROM:<x@y>\r\n"
    expected = DataReader(size_limit=None, line_limit=40, normalize=normalize)
    pieces = (stream + trailer).split(b"\n")
    rest = b""
    for index, piece in enumerate(pieces):
        if expected.feed(piece + b"\n"):
            rest = b"\n".join(pieces[index + 1 :])
            break
    assert rest == trailer
    want = (expected.problem, expected.content())
    for arrive in (1, 2, 3, 5, 7, 16, 64, 4096):
        reader, left = _read_planned(stream + trailer, arrive, normalize)
        assert left == trailer, arrive
        assert (reader.problem, reader.content()) == want, arrive


def test_read_plan_after_each_tail() -> None:
    assert data_read_plan(b"\r\n") is ReadStep.HEAD
    for tail in (b"ab\r", b"a\r\n.", b"\r\n.\r"):
        assert data_read_plan(tail) is ReadStep.LINE
    for tail in (b"abcd", b"ab\n.", b"a.\n\n", b".\r\nx"):
        assert data_read_plan(tail) is ReadStep.BULK


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.example>",
        "<a@b.example> SIZE=10",
        "<a@b.example>  SIZE=10 BODY=8BITMIME",
        "<a.b+c/d=e@d-e.f>",
        "<a@b.example>(comment) SIZE=1",
        "<a@b.example> (comment)",
        "<a@b.example> ",
        "<A@B.EXAMPLE>",
        "<a@[192.0.2.1]>",
        '<"q r"@b.example>',
        "<a..b@b.example>",
        "<a@b.>",
        "<.a@b.example>",
        "<a@b_c.example>",
        "<@relay.example:a@b.example>",
        "<>",
        " <a@b.example>",
        "<a@b.example>\tSIZE=1",
        "<ü@b.example>",
        "<a@b.example> SIZE=1 ",
    ],
)
def test_simple_path_agrees_with_the_full_parser(arg: str) -> None:
    from email._header_value_parser import get_angle_addr
    from email.errors import HeaderParseError

    fast = simple_path(arg)
    if fast is None:
        return  # aiosmtpd's parser decides
    try:
        address, rest = get_angle_addr(arg)
    except HeaderParseError:
        raise AssertionError(f"{arg!r}: the full parser refuses what the fast path took") from None
    assert fast == (address.addr_spec, rest)


@given(st.text(alphabet='<>@.ab-_+ ()"[]:\\=S1', max_size=24))
def test_simple_path_agrees_with_the_full_parser_on_any_text(arg: str) -> None:
    test_simple_path_agrees_with_the_full_parser(arg)


# Streams that set a problem before their end: what follows the problem is no longer kept, so
# the end must be found from what the reader remembers about the line's fragments.
_PROBLEM_STREAMS = [
    (b"a\nb\r\n.\r\n", None, BARE_NEWLINE_REFUSED),
    (b"a\nb\r\nc\r\n\r\n.\r\n", None, BARE_NEWLINE_REFUSED),
    (b"x" * 30 + b"\r\n" + b"y" * 30 + b"\r\n.\r\n", 40, TOO_MUCH_DATA),
    (b"x" * 50 + b"\r\nok\r\n.\r\n", None, LINE_TOO_LONG),
]


@pytest.mark.parametrize(("stream", "size_limit", "problem"), _PROBLEM_STREAMS)
def test_end_is_found_after_a_problem_wherever_the_stream_splits(
    stream: bytes, size_limit: int | None, problem: str
) -> None:
    """Split in two reads at every position (and in three around the final CRLF): the end line
    is taken exactly at the end, whether or not the reader still keeps the line's bytes."""
    splits = [(cut,) for cut in range(1, len(stream))]
    splits += [(cut, len(stream) - 3) for cut in range(1, len(stream) - 3)]
    splits += [(len(stream) - 4, len(stream) - 3)]  # "\r" | "\n" | ".\r\n"
    for cuts in splits:
        reader = DataReader(size_limit=size_limit, line_limit=40, normalize=False)
        bounds = [0, *sorted(set(cuts)), len(stream)]
        pieces = [stream[a:b] for a, b in pairwise(bounds) if b > a]
        results = [reader.feed(piece) for piece in pieces]
        assert results == [False] * (len(pieces) - 1) + [True], (cuts, pieces)
        assert reader.problem == problem, cuts
        assert reader.content() == b""


def test_cr_and_lf_in_separate_reads_after_a_bare_lf() -> None:
    reader = DataReader(size_limit=None, line_limit=1001, normalize=False)
    assert not reader.feed(b"a\nb\r")
    assert not reader.feed(b"\n")
    assert reader.feed(b".\r\n")
    assert reader.problem == BARE_NEWLINE_REFUSED


def test_cr_and_lf_in_separate_reads_after_too_much_data() -> None:
    reader = DataReader(size_limit=4, line_limit=1001, normalize=False)
    assert not reader.feed(b"abcdef\r\nb\r")
    assert not reader.feed(b"\n")
    assert reader.feed(b".\r\n")
    assert reader.problem == TOO_MUCH_DATA
