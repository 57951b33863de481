"""Mechanism choice and SASL payloads."""

from __future__ import annotations

import base64

import pytest

from smtpconn.smtp.sasl import (
    choose_mechanism,
    decode_challenge,
    oauthbearer_response,
    plain_response,
    xoauth2_advice,
    xoauth2_response,
)
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
        (AuthMechanism.XOAUTH2, {"XOAUTH2", "OAUTHBEARER"}, "XOAUTH2"),
        # a bearer token goes as OAUTHBEARER where XOAUTH2 is not offered
        (AuthMechanism.XOAUTH2, {"PLAIN", "OAUTHBEARER"}, "OAUTHBEARER"),
        (AuthMechanism.OAUTHBEARER, {"XOAUTH2", "OAUTHBEARER"}, "OAUTHBEARER"),
        (AuthMechanism.OAUTHBEARER, {"XOAUTH2"}, None),
        (AuthMechanism.AUTO, {"OAUTHBEARER"}, None),
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


def test_oauthbearer_payload_rfc7628() -> None:
    decoded = base64.b64decode(oauthbearer_response("u,=@x.test", "tok", "smtp.x.test", 587))
    # RFC 7628 3.1 (example in 4.1); "," and "=" in the authzid escaped as RFC 5801 says
    assert decoded == (
        b"n,a=u=2C=3D@x.test,\x01host=smtp.x.test\x01port=587\x01auth=Bearer tok\x01\x01"
    )


def test_token_advice_counts_oauthbearer_as_a_token_mechanism() -> None:
    assert xoauth2_advice(AuthMechanism.PLAIN, frozenset({"OAUTHBEARER"})) is not None
    assert xoauth2_advice(AuthMechanism.OAUTHBEARER, frozenset({"OAUTHBEARER"})) is None
