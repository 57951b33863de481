"""The test message ``send-test`` sends: recognisable, traceable, signed, and injection-proof.

Every message carries a unique token in ``X-Smtpconn-Test`` and in the Subject (so it can be
found again in a Maildir or a help-desk inbox), a proper Message-ID and Date, and a plain body
that says what it is. Nothing the user typed reaches a header unchecked: the recipient is parsed
as an address and the subject refuses control characters, so ``--to`` or ``--subject`` cannot
add headers. It is DKIM-signed with the profile's key when it has one, by the relay's own signer
(:mod:`smtpconn.smtp.dkim`), so the test proves the signature replies will carry.
"""

from __future__ import annotations

import re
import secrets
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, localtime

from smtpconn.addresses import MailAddress
from smtpconn.errors import UsageError
from smtpconn.smtp.dkim import DkimKey, dkim_sign

TOKEN_HEADER = "X-Smtpconn-Test"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SUBJECT = 200


@dataclass(frozen=True, slots=True)
class TestMessage:
    __test__ = False  # not a pytest class

    token: str
    message_id: str
    subject: str
    raw: bytes
    dkim_signed: bool


def new_token() -> str:
    return "smtpconn-" + secrets.token_hex(8)


def check_subject(subject: str) -> str:
    if _CONTROL.search(subject):
        raise UsageError(
            "the subject must be one line without control characters",
            fix="remove line breaks and tabs from the subject",
            input="subject",
        )
    if len(subject) > MAX_SUBJECT:
        raise UsageError(
            f"the subject is longer than {MAX_SUBJECT} characters",
            fix="shorten it",
            input="subject",
        )
    return subject.strip()


def build_test_message(
    *,
    sender: MailAddress,
    recipient: MailAddress,
    direction: str,
    subject: str | None = None,
    body: str | None = None,
    dkim: DkimKey | None = None,
    token: str | None = None,
) -> TestMessage:
    token = token or new_token()
    prefix = check_subject(subject) if subject else f"smtpconn {direction} test"
    full_subject = f"{prefix} [{token}]"
    message = EmailMessage(policy=SMTP)
    message["From"] = sender.ascii
    message["To"] = recipient.ascii
    message["Subject"] = full_subject
    message["Date"] = format_datetime(localtime())
    message_id = f"<{token}@{sender.domain}>"
    message["Message-ID"] = message_id
    message[TOKEN_HEADER] = token
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a test
    text = (
        f"This is a test message sent by smtpconn ({direction} direction) from "
        f"{sender.ascii} to {recipient.ascii}, on {socket.getfqdn()}.\n"
        f"Its token is {token}; it proves that the connector carries mail. "
        "You can delete it.\n"
    )
    if body:
        text += "\n" + body.replace("\r\n", "\n").replace("\r", "\n") + "\n"
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    raw = message.as_bytes()
    signed = False
    if dkim is not None:
        raw = dkim_sign(raw, dkim)
        signed = True
    return TestMessage(token, message_id, full_subject, raw, signed)
