"""The inbound policy's judgement (pure): DMARC, a trusted ARC sealer's word, and what each
``unauthenticated_policy`` does with it; the ARC header reading."""

from __future__ import annotations

import pytest

from smtpconn.profile.model import UnauthenticatedPolicy as P
from smtpconn.relay.arc import ArcVerdict, verdict_of
from smtpconn.relay.authres import AuthVerdicts, author_domain
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
        ("permerror", None, Auth.NONE),
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
        ("permerror", Action.DELIVER, Action.DELIVER, Action.DELIVER),  # broken record: no policy
    ],
)
def test_policy_actions(dmarc: str, tag: Action, hold: Action, reject: Action) -> None:
    judgement = judge(verdicts(dmarc), ())
    assert [judgement.action(p) for p in (P.TAG, P.HOLD, P.REJECT)] == [tag, hold, reject]


def test_sealer_and_dmarc_come_from_the_instance_dkimpy_verified() -> None:
    """dkimpy's result data, highest instance first: its as-domain and aar-value decide."""
    results = [
        {
            "instance": 2,
            "as-domain": b"Second.Example.",
            "aar-value": b"i=2; mx.second.example; spf=fail smtp.mailfrom=x;"
            b" dmarc=pass (p=reject) header.from=a.example",
        },
        {"instance": 1, "as-domain": b"first.example", "aar-value": b"i=1; mx; dmarc=fail"},
    ]
    assert verdict_of(b"pass", results) == ArcVerdict("pass", "second.example", "pass")


@pytest.mark.parametrize("cv", [b"fail", None, b"none", b"odd"])
def test_a_chain_that_did_not_pass_names_no_sealer(cv: bytes | None) -> None:
    results = [{"instance": 1, "as-domain": b"sealer.example", "aar-value": b"i=1; x; dmarc=pass"}]
    verdict = verdict_of(cv, results)
    assert (verdict.sealer, verdict.dmarc) == (None, None)
    assert verdict.cv == ("none" if cv == b"none" else "fail")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: A <a@Author.Example>\r\n", ("author.example", None)),
        (b"From: a@author.example, b@AUTHOR.example\r\n", ("author.example", None)),
        (b"", (None, "no From header")),
        (b"From: a@author.example\r\nFrom: b@other.example\r\n", (None, "2 From headers")),
        (b"From: a@author.example, b@other.example\r\n", (None, "From names authors in 2 domains")),
        (b"From: undisclosed\r\n", (None, "no author address in From")),
    ],
)
def test_author_domain(header: bytes, expected: tuple[str | None, str | None]) -> None:
    assert author_domain(header + b"Subject: x\r\n\r\nbody\r\n") == expected


def test_no_single_author_is_a_failure_whatever_arc_says() -> None:
    arc = ArcVerdict("pass", "sealer.example", "pass")
    found = AuthVerdicts("pass", "f.example", [], "none", None, None, arc=arc, author_problem="x")
    judgement = judge(found, ("sealer.example",))
    assert judgement.auth is Auth.FAIL
    assert judgement.action(P.REJECT) is Action.REJECT
