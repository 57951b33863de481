"""Reply parsing, EHLO keywords and queue ids, against replies copied from real servers."""

from __future__ import annotations

import pytest

from smtpconn.smtp.replies import (
    Reply,
    ReplyParseError,
    parse_ehlo,
    parse_queue_id,
    parse_reply,
    parse_reply_line,
)


def test_multiline_reply_is_joined() -> None:
    reply = parse_reply(["250-mail.good.test", "250-STARTTLS", "250 AUTH PLAIN LOGIN"])
    assert reply.code == 250
    assert reply.lines == ("mail.good.test", "STARTTLS", "AUTH PLAIN LOGIN")
    assert reply.positive and not reply.permanent


@pytest.mark.parametrize("line", ["hello", "25 short", "2500 x", "abc def", "250x"])
def test_garbage_is_not_a_reply(line: str) -> None:
    with pytest.raises(ReplyParseError):
        parse_reply_line(line)


def test_bare_code_is_a_reply() -> None:
    assert parse_reply_line("250") == (250, True, "")


def test_mixed_codes_are_refused() -> None:
    with pytest.raises(ReplyParseError):
        parse_reply(["250-a", "251 b"])


def test_classification() -> None:
    assert Reply(421, ("busy",)).transient
    assert Reply(554, ("no",)).permanent
    assert str(Reply(535, ("5.7.8 bad",))) == "535 5.7.8 bad"


def test_ehlo_keywords_and_auth_mechanisms() -> None:
    ext = parse_ehlo(
        Reply(250, ("mx.example", "PIPELINING", "SIZE 1000", "STARTTLS", "AUTH PLAIN login"))
    )
    assert ext.has("starttls")
    assert ext.auth_mechanisms == frozenset({"PLAIN", "LOGIN"})
    assert ext.keywords["SIZE"] == "1000"


def test_old_style_auth_equals_is_read() -> None:
    ext = parse_ehlo(Reply(250, ("mx", "AUTH=LOGIN PLAIN")))
    assert ext.auth_mechanisms == frozenset({"LOGIN", "PLAIN"})


def test_no_auth_offered() -> None:
    assert not parse_ehlo(Reply(250, ("mx", "STARTTLS"))).auth_offered


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.0.0 Ok: queued as 4ZxQ1k2Lb3z9sT", "4ZxQ1k2Lb3z9sT"),
        ("OK id=1rAbCd-000123-Xy", "1rAbCd-000123-Xy"),
        (
            "2.6.0 <abc@example.com> [InternalId=12345678901, Hostname=AM0PR] Queued mail for delivery",
            "12345678901",
        ),
        (
            "2.0.0 OK  1718000000 a640c23a62f3a-a6f0b1c2d3sm123456.99 - gsmtp",
            "a640c23a62f3a-a6f0b1c2d3sm123456.99",
        ),
        ("Ok", None),
    ],
)
def test_queue_id(text: str, expected: str | None) -> None:
    assert parse_queue_id(Reply(250, (text,))) == expected
