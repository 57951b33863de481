"""The listener's SMTPUTF8 rules as pure functions of the decoded command (aiosmtpd decodes
arguments as UTF-8 with surrogateescape once SMTPUTF8 is offered)."""

from __future__ import annotations

import pytest

from smtpconn.relay.wire import (
    HEADER_NOT_UTF8,
    MAIL_NEEDS_SMTPUTF8,
    MAIL_PATH_REFUSED,
    NOT_UTF8,
    PARAMS_NOT_ASCII,
    RCPT_NEEDS_SMTPUTF8,
    RCPT_PATH_REFUSED,
    header_refusal,
    utf8_refusal,
)
from smtpconn.smtp.session import needs_smtputf8


def _arg(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("raw", "reply"),
    [
        (b"FROM:<a@example.org>", None),
        ("FROM:<jösé@example.org> SMTPUTF8".encode(), None),
        ("FROM:<jösé@example.org> smtputf8 BODY=8BITMIME".encode(), None),
        ("FROM:<jösé@example.org>".encode(), (MAIL_NEEDS_SMTPUTF8, "smtputf8-required")),
        (
            "FROM:<a@example.org> SMTPUTF8 ENVID=é".encode(),
            (PARAMS_NOT_ASCII, "non-ascii-parameter"),
        ),
        (b"FROM:<a\xc0\xaf@example.org> SMTPUTF8", (NOT_UTF8, "not-utf8")),
        (b"FROM:<a\xed\xa0\x80@example.org> SMTPUTF8", (NOT_UTF8, "not-utf8")),
        ("FROM:<a\u0085@example.org> SMTPUTF8".encode(), (MAIL_PATH_REFUSED, "control-character")),
        ('FROM:<"ü>x"@example.org> SMTPUTF8'.encode(), None),  # ">" inside quotes
    ],
)
def test_mail(raw: bytes, reply: tuple[str, str] | None) -> None:
    assert utf8_refusal(_arg(raw), smtputf8=None, path_reply=MAIL_PATH_REFUSED) == reply


def test_rcpt_follows_the_transaction() -> None:
    arg = _arg("TO:<forward@bücher.example>".encode())
    assert utf8_refusal(arg, smtputf8=False, path_reply=RCPT_PATH_REFUSED) == (
        RCPT_NEEDS_SMTPUTF8,
        "smtputf8-required",
    )
    assert utf8_refusal(arg, smtputf8=True, path_reply=RCPT_PATH_REFUSED) is None


def test_header_must_be_utf8_only_in_an_smtputf8_message() -> None:
    latin1 = b"Subject: caf\xe9\r\n\r\nbody \xff\r\n"
    assert header_refusal(latin1, smtputf8=True) == HEADER_NOT_UTF8
    assert header_refusal(latin1, smtputf8=False) is None
    # The body may be any 8-bit data; only the header block is promised to be UTF-8.
    assert header_refusal("Subject: café\r\n\r\n".encode() + b"\xff", smtputf8=True) is None


@pytest.mark.parametrize(
    ("mail_from", "rcpts", "declared", "needed"),
    [
        ("a@x.test", ["b@y.test"], False, False),
        ("jösé@x.test", ["b@y.test"], False, True),
        ("a@x.test", ["b@bücher.test"], False, True),
        ("a@x.test", ["b@y.test"], True, True),  # the submission declared SMTPUTF8
    ],
)
def test_needs_smtputf8(mail_from: str, rcpts: list[str], declared: bool, needed: bool) -> None:
    """Addresses and the submission's own SMTPUTF8 decide, never the content: a raw UTF-8
    Subject of an ASCII-addressed reply goes without SMTPUTF8, as it did before."""
    assert needs_smtputf8(mail_from, rcpts, declared=declared) is needed
