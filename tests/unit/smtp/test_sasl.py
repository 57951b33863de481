"""Mechanism choice and SASL payloads."""

from __future__ import annotations

import base64

import pytest

from smtpconn.smtp.sasl import choose_mechanism, decode_challenge, plain_response, xoauth2_response
from smtpconn.smtp.vocab import AuthMechanism


@pytest.mark.parametrize(
    ("configured", "offered", "expected"),
    [
        (AuthMechanism.AUTO, {"PLAIN", "LOGIN"}, "PLAIN"),
        (AuthMechanism.AUTO, {"LOGIN"}, "LOGIN"),
        (AuthMechanism.AUTO, {"LOGIN", "XOAUTH2"}, "LOGIN"),
        # auto never sends a password as a bearer token
        (AuthMechanism.AUTO, {"XOAUTH2"}, None),
        (AuthMechanism.AUTO, set(), None),
        (AuthMechanism.XOAUTH2, {"PLAIN", "XOAUTH2"}, "XOAUTH2"),
        (AuthMechanism.LOGIN, {"PLAIN", "LOGIN"}, "LOGIN"),
        (AuthMechanism.PLAIN, {"LOGIN"}, None),
    ],
)
def test_choose_mechanism(
    configured: AuthMechanism, offered: set[str], expected: str | None
) -> None:
    assert choose_mechanism(configured, frozenset(offered)) == expected


def test_plain_payload() -> None:
    assert base64.b64decode(plain_response("u@x.test", "pw")) == b"\0u@x.test\0pw"


def test_xoauth2_payload() -> None:
    decoded = base64.b64decode(xoauth2_response("u@x.test", "tok"))
    assert decoded == b"user=u@x.test\x01auth=Bearer tok\x01\x01"


def test_decode_challenge() -> None:
    assert decode_challenge("VXNlcm5hbWU6") == "Username:"
    assert decode_challenge("not base64!") == "not base64!"
