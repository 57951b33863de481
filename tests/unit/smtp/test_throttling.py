"""The throttling predicate against replies copied from real servers."""

from __future__ import annotations

import pytest

from smtpconn.smtp.replies import Reply
from smtpconn.smtp.reply_catalogue import Effect, explain, is_throttling


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
        "421 4.7.28 Gmail has detected an unusual rate of unsolicited mail",
        "550 5.4.5 Daily user sending limit exceeded.",
        "450 4.7.1 Error: too much mail from 127.0.0.1",
        "451 4.4.5 System congestion, try again later",
        "451 4.7.650 The mail server [203.0.113.5] has been temporarily rate limited",
        "452 4.3.2 System not accepting network messages",
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
        # A recipient's mailbox over its quota, full or disabled: that recipient only (retry or
        # bounce it), never a stop for the whole lane.
        "452 4.2.2 Quota exceeded (mailbox for user is full)",
        "552 Quota exceeded",
        "554 5.2.0 STOREDRV.Deliver.Exception:QuotaExceededException; Failed to process message "
        "due to a permanent exception with message [BeginDiagnosticData]Mailbox quota exceeded",
        "550 5.7.1 <x@example.com>: Recipient address rejected: daily quota exceeded for recipient",
        "450 4.2.1 <x@example.com>: mailbox temporarily disabled",
        # Google: the recipient's incoming rate, not ours
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        "452 4.2.2 <x@example.com>: rate limit of the mailbox: too many messages stored",
    ],
)
def test_ordinary_replies_are_not_throttling(line: str) -> None:
    assert not is_throttling(_reply(line))


@pytest.mark.parametrize(
    ("line", "effect"),
    [
        ("450 4.2.1 <x@example.com>: mailbox temporarily disabled", Effect.RETRY),
        (
            "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
            "prevents additional messages from being delivered.",
            Effect.RETRY,
        ),
        (
            "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed",
            Effect.THROTTLED,
        ),
    ],
)
def test_catalogue_verdicts_for_4_2_1_and_5_2_0(line: str, effect: Effect) -> None:
    meaning = explain(_reply(line))
    assert meaning is not None and meaning.effect is effect


@pytest.mark.parametrize(
    "line",
    [
        "452 4.2.2 Quota exceeded (mailbox for user is full)",
        "552 Quota exceeded",
        "554 5.2.0 STOREDRV.Deliver.Exception:QuotaExceededException; Failed to process",
        "550 5.7.1 <x@example.com>: Recipient address rejected: daily quota exceeded",
    ],
)
def test_recipient_quota_replies_have_no_throttling_entry(line: str) -> None:
    meaning = explain(_reply(line))
    assert meaning is None or not meaning.throttling
