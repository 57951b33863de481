"""The inbound policy's judgement (pure): DMARC, a trusted ARC sealer's word, and what each
``unauthenticated_policy`` does with it; the ARC header reading."""

from __future__ import annotations

import pytest

from smtpconn.profile.model import UnauthenticatedPolicy as P
from smtpconn.relay.arc import ArcVerdict, latest_instance
from smtpconn.relay.authres import AuthVerdicts
from smtpconn.relay.policy import Action, Auth, judge


def verdicts(dmarc: str, arc: ArcVerdict | None = None) -> AuthVerdicts:
    return AuthVerdicts("pass", "fwd.example", [], dmarc, "reject", "author.example", arc=arc)


@pytest.mark.parametrize(
    ("dmarc", "arc", "auth"),
    [
        ("pass", None, Auth.PASS),
        ("fail", None, Auth.FAIL),
        ("none", None, Auth.NONE),
        ("temperror", None, Auth.NONE),
        ("fail", ArcVerdict("pass", "sealer.example", "pass"), Auth.PASS),
        ("fail", ArcVerdict("pass", "other.example", "pass"), Auth.FAIL),  # not trusted
        ("fail", ArcVerdict("fail", "sealer.example", "pass"), Auth.FAIL),  # chain broken
        ("pass", ArcVerdict("pass", "sealer.example", "fail"), Auth.FAIL),  # the sealer decides
        ("fail", ArcVerdict("pass", "sealer.example", None), Auth.FAIL),  # no dmarc= in the AAR
    ],
)
def test_auth_word(dmarc: str, arc: ArcVerdict | None, auth: Auth) -> None:
    assert judge(verdicts(dmarc, arc), ("sealer.example",)).auth is auth


@pytest.mark.parametrize(
    ("dmarc", "tag", "hold", "reject"),
    [
        ("pass", Action.DELIVER, Action.DELIVER, Action.DELIVER),
        ("fail", Action.DELIVER, Action.HOLD, Action.REJECT),
        ("none", Action.DELIVER, Action.DELIVER, Action.DELIVER),
        ("temperror", Action.DELIVER, Action.HOLD, Action.DEFER),
    ],
)
def test_policy_actions(dmarc: str, tag: Action, hold: Action, reject: Action) -> None:
    judgement = judge(verdicts(dmarc), ())
    assert [judgement.action(p) for p in (P.TAG, P.HOLD, P.REJECT)] == [tag, hold, reject]


def test_latest_instance_is_read_by_i() -> None:
    message = (
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=first.example; s=s; b=x\r\n"
        b"ARC-Authentication-Results: i=1; mx.first.example; dmarc=fail header.from=a.example\r\n"
        b"ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=Second.Example.; s=s; b=x\r\n"
        b"ARC-Authentication-Results: i=2; mx.second.example; spf=fail\r\n"
        b"\tsmtp.mailfrom=x; dmarc=pass (p=reject) header.from=a.example\r\n"
        b"From: a@a.example\r\n\r\nbody\r\n"
    )
    assert latest_instance(message) == ("second.example", "pass")
    assert latest_instance(b"From: a@a.example\r\n\r\nbody\r\n") == (None, None)
