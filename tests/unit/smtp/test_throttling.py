"""The throttling predicate against replies copied from real servers."""

from __future__ import annotations

import pytest

from smtpconn.smtp.replies import Reply
from smtpconn.smtp.reply_catalogue import is_throttling


def _reply(line: str) -> Reply:
    code, _, text = line.partition(" ")
    return Reply(int(code), (text,))


@pytest.mark.parametrize(
    "line",
    [
        "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=AM0PR01MB1234]",
        "421 4.7.0 mail.good.test Error: too many connections from 127.0.0.1",
        "421 4.7.0 Try again later, closing connection. (EHLO) s1-20020a.1 - gsmtp",
        "451 4.7.500 Server busy. Please try again later from [203.0.113.5]. (AS761)",
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
        "process message due to a permanent exception with message",
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        "421 4.7.28 Gmail has detected an unusual rate of unsolicited mail",
        "550 5.4.5 Daily user sending limit exceeded.",
        "450 4.7.1 Error: too much mail from 127.0.0.1",
    ],
)
def test_throttling_replies(line: str) -> None:
    assert is_throttling(_reply(line))


@pytest.mark.parametrize(
    "line",
    [
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
        "552 5.2.2 Mailbox full; quota exceeded",
        "451 4.3.0 Error: queue file write error",
        "450 4.7.1 <x@example.com>: Recipient address rejected: Greylisted, try again later",
        "452 4.5.3 Error: too many recipients",
        "554 5.7.1 Relay access denied",
        "250 2.0.0 Ok: queued as 4ABC",
    ],
)
def test_ordinary_replies_are_not_throttling(line: str) -> None:
    assert not is_throttling(_reply(line))
