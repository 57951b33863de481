"""The delivery-status part of a DSN names each failed recipient so a program can match it."""

from __future__ import annotations

import email
import email.policy

from smtpconn.relay.dsn import FailedRecipient, build_dsn


def _status_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    [status] = [p for p in message.walk() if p.get_content_type() == "message/delivery-status"]
    return str(status)


def _dsn_for(recipient: str) -> bytes:
    return build_dsn(
        reporting_mta="relay.helpdesk.test",
        sender="support@good.test",
        original=b"Subject: hi\r\n\r\nbody\r\n",
        arrival=1_700_000_000.0,
        failures=[FailedRecipient(recipient, "5.6.7", "550 5.6.7 no SMTPUTF8")],
    )


def test_an_ascii_recipient_is_an_rfc822_address() -> None:
    raw = _dsn_for("customer+tag@example.org")
    assert "Final-Recipient: rfc822; customer+tag@example.org" in _status_part(raw)


def test_a_utf8_recipient_is_rfc6533_utf8_xtext_not_question_marks() -> None:
    raw = _dsn_for("jösé+x@bücher.example")
    status = _status_part(raw)
    assert raw.isascii()
    assert r"Final-Recipient: utf-8; j\x{F6}s\x{E9}\x{2B}x@b\x{FC}cher.example" in status
    assert "?" not in status.split("Final-Recipient:")[1].splitlines()[0]


def test_characters_beyond_latin1_use_their_full_code_point() -> None:
    raw = _dsn_for("用户@例子.example")
    assert r"Final-Recipient: utf-8; \x{7528}\x{6237}@\x{4F8B}\x{5B50}.example" in raw.decode()


def _explanation(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    text = message.get_payload(0)  # the first part of the multipart/report: for people
    payload = text.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(text.get_content_charset() or "ascii")


def test_the_human_part_names_a_utf8_mailbox_as_written_and_the_dsn_stays_7bit() -> None:
    raw = _dsn_for("jösé+x@bücher.example")
    assert raw.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert "<jösé+x@bücher.example>: 550 5.6.7 no SMTPUTF8" in _explanation(raw)


def test_an_ascii_only_dsn_keeps_its_plain_us_ascii_part() -> None:
    raw = _dsn_for("customer@example.org")
    assert b"charset=us-ascii" in raw
    assert b"quoted-printable" not in raw
    assert "<customer@example.org>: 550 5.6.7 no SMTPUTF8" in _explanation(raw)


def test_a_long_non_ascii_diagnostic_is_wrapped_with_crlf_soft_breaks() -> None:
    raw = build_dsn(
        reporting_mta="relay.helpdesk.test",
        sender="support@good.test",
        original=b"Subject: hi\r\n\r\nbody\r\n",
        arrival=1_700_000_000.0,
        failures=[FailedRecipient("a@b.example", "5.0.0", "550 " + "é" * 200)],
    )
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert "é" * 200 in _explanation(raw)
