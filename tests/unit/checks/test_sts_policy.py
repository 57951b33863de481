"""mta-sts.policy's pure rules on hand-built fetches: RFC 8461 §3.2 syntax, §4.1 MX patterns,
and the transport rules of §3.3 (verified TLS, 200, text/plain, no redirect, 64 KB)."""

from __future__ import annotations

import pytest

from smtpconn.checks.model import Status
from smtpconn.checks.sts_policy import (
    FetchFailure,
    Policy,
    PolicyFetch,
    judge_policy,
    mx_matches,
    parse_policy,
)

HOST = "mta-sts.ex.test"
GOOD = (
    "version: STSv1\r\nmode: enforce\r\nmx: mail.ex.test\r\nmx: *.backup.test\r\nmax_age: 86400\r\n"
)


def served(body: str | bytes, status: int = 200, **headers: str) -> PolicyFetch:
    raw = body.encode() if isinstance(body, str) else body
    heads = {"content-type": "text/plain; charset=utf-8", **headers}
    return PolicyFetch(HOST, status=status, headers=heads, body=raw)


def test_parse_good_policy_with_crlf_and_lf() -> None:
    expected = Policy("enforce", 86400, ("mail.ex.test", "*.backup.test"))
    assert parse_policy(GOOD) == expected
    assert parse_policy(GOOD.replace("\r\n", "\n")) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mode: enforce\nmx: a.ex.test\nmax_age: 1\n", "version must be STSv1"),
        ("version: STSv1\nmode: strict\nmx: a.ex.test\nmax_age: 1\n", "mode must be"),
        ("version: STSv1\nmode: enforce\nmx: a.ex.test\nmax_age: 1d\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmx: a.ex.test\nmax_age: 99999999\n", "max_age"),
        ("version: STSv1\nmode: enforce\nmax_age: 10\n", "no mx: line"),
        ("version: STSv1\nmode: enforce\nmx: *.*.ex.test\nmax_age: 10\n", "invalid mx"),
        ("version: STSv1\nmode enforce\nmx: a.ex.test\nmax_age: 10\n", "not 'key: value'"),
    ],
)
def test_parse_problems(text: str, problem: str) -> None:
    problems = parse_policy(text)
    assert isinstance(problems, list)
    assert any(problem in p for p in problems), problems


def test_first_of_repeated_key_counts_and_extensions_are_allowed() -> None:
    text = "version: STSv1\nmode: testing\nmode: enforce\nmx: a.ex.test\nmax_age: 5\next_x: y z\n"
    assert parse_policy(text) == Policy("testing", 5, ("a.ex.test",))


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mail.ex.test", "mail.ex.test", True),
        ("mail.ex.test", "MAIL.EX.TEST.", True),
        ("*.ex.test", "mx1.ex.test", True),
        ("*.ex.test", "ex.test", False),
        ("*.ex.test", "a.b.ex.test", False),
        ("mail.ex.test", "mail2.ex.test", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


def test_enforced_policy_covering_every_mx_passes() -> None:
    result = judge_policy(served(GOOD), ["mail.ex.test", "mx2.backup.test"])
    assert result.status is Status.PASS, result


def test_enforce_fails_naming_the_uncovered_mx() -> None:
    result = judge_policy(served(GOOD), ["mail.ex.test", "other.ex.test"])
    assert result.status is Status.FAIL
    assert "other.ex.test" in result.summary and "mail.ex.test" not in result.summary
    assert "mx: other.ex.test" in result.fix and "id=" in result.fix


@pytest.mark.parametrize("mode", ["testing", "none"])
def test_testing_and_none_warn(mode: str) -> None:
    result = judge_policy(served(GOOD.replace("enforce", mode)), ["other.ex.test"])
    assert result.status is Status.WARN
    assert mode in result.summary and "other.ex.test" in result.summary
    assert "mode: enforce" in result.fix


@pytest.mark.parametrize(
    ("fetch", "status", "in_summary"),
    [
        (served(GOOD, 301, location="https://www.ex.test/sts"), Status.FAIL, "redirects"),
        (served(GOOD, 404), Status.FAIL, "HTTP 404"),
        (served(GOOD, **{"content-type": "text/html"}), Status.FAIL, "text/html"),
        (PolicyFetch(HOST, status=200, headers={}, body=GOOD.encode()), Status.FAIL, "no Content"),
        (served(b"\xff\xfe"), Status.FAIL, "UTF-8"),
        (PolicyFetch(HOST, FetchFailure.NO_ADDRESS), Status.FAIL, "has no address"),
        (PolicyFetch(HOST, FetchFailure.REFUSED, "refused"), Status.FAIL, "nothing accepts"),
        (PolicyFetch(HOST, FetchFailure.TLS, "unable to get"), Status.FAIL, "TLS handshake"),
        (PolicyFetch(HOST, FetchFailure.PROTOCOL, "junk"), Status.FAIL, "readable HTTP"),
        (PolicyFetch(HOST, FetchFailure.TIMEOUT, "slow"), Status.ERROR, "could not tell"),
        (PolicyFetch(HOST, FetchFailure.DNS_ERROR, "SERVFAIL"), Status.ERROR, "could not tell"),
        (served(GOOD.replace("STSv1", "STSv2")), Status.FAIL, "invalid"),
    ],
)
def test_transport_and_syntax_defects(fetch: PolicyFetch, status: Status, in_summary: str) -> None:
    result = judge_policy(fetch, ["mail.ex.test"])
    assert result.status is status and in_summary in result.summary, result
    assert result.fix


def test_too_large_fails() -> None:
    fetch = PolicyFetch(HOST, status=200, headers={"content-type": "text/plain"}, too_large=True)
    result = judge_policy(fetch, ["mail.ex.test"])
    assert result.status is Status.FAIL and "64 KB" in result.summary


def test_fix_template_lists_the_domains_mx_hosts() -> None:
    result = judge_policy(PolicyFetch(HOST, FetchFailure.REFUSED), ["mx1.ex.test", "mx2.ex.test"])
    assert "mx: mx1.ex.test\\nmx: mx2.ex.test" in result.fix
    assert "https://mta-sts.ex.test/.well-known/mta-sts.txt" in result.fix
