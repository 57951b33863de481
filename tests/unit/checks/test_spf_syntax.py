from __future__ import annotations

import pytest

from smtpconn.checks.spf_syntax import (
    corrected,
    is_spf,
    merge,
    parse_spf,
    with_mechanisms,
    without_bad_terms,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=spf1 -all", True),
        ("V=SPF1", True),
        ("v=spf10 -all", False),
        ("v=spf1-all", False),
        ("spf2.0/pra", False),
    ],
)
def test_is_spf(text: str, expected: bool) -> None:
    assert is_spf(text) is expected


def test_valid_record_terms() -> None:
    record = parse_spf(
        "v=spf1  a mx/24 a:foo.example/24//64 exists:%{i}._spf.example "
        "ip6:2001:db8::/32 ?all redirect=other.example unknown=x"
    )
    assert record.valid, record.problems
    names = [t.name for t in record.terms]
    assert names == ["a", "mx", "a", "exists", "ip6", "all", "redirect", "unknown"]
    assert record.terms[1].cidr4 == 24 and record.terms[2].cidr6 == 64
    assert record.terms[3].has_macro
    # nothing after all is evaluated
    assert [t.name for t in record.evaluated_terms()][-1] == "all"


@pytest.mark.parametrize(
    ("term", "reason"),
    [
        ("inlcude:_spf.example.com", "did you mean include"),
        ("ip4:300.1.1.1", "not an ip4"),
        ("ip4:2001:db8::1", "not an ip4"),
        ("a:192.0.2.1", "top-level label"),
        ("a/33", "over 32"),
        ("mx//129", "over 128"),
        ("include:", "needs a domain"),
        ("exists:100%.example.com", "invalid macro"),
        ("all:foo", "no argument"),
        ("ptr/24", "no prefix"),
        ("include", "needs ':' and a domain"),
        ("ip6", "needs a network, e.g. ip6:2001:db8::/32"),
        ("ip6:192.0.2.1", "not an ip6 address"),
        ("redirect=1.2.3.4", "redirect= does not end in a valid top-level label"),
        ("foo=%x", "has an invalid macro"),
        ("~MXX/24", "unknown mechanism 'MXX' (did you mean mx?)"),
    ],
)
def test_syntax_errors_name_the_offending_term(term: str, reason: str) -> None:
    record = parse_spf(f"v=spf1 ip4:192.0.2.1 {term} -all")
    assert not record.valid
    [problem] = record.problems
    assert problem.term == term and reason in problem.reason


def test_duplicate_redirect_is_an_error() -> None:
    record = parse_spf("v=spf1 redirect=a.example redirect=b.example")
    assert [p.term for p in record.problems] == ["redirect=b.example"]


def test_a_correction_keeps_the_qualifier_and_the_argument() -> None:
    [problem] = parse_spf("v=spf1 ~MXX/24 -all").problems
    assert problem.suggestion == "~mx/24"
    [problem] = parse_spf("v=spf1 inclde:x.example -all").problems
    assert problem.suggestion == "include:x.example"


def test_corrections() -> None:
    record = parse_spf("v=spf1 ip4:127.0.0.1 inlcude:_spf.good.test -all")
    assert corrected(record) == "v=spf1 ip4:127.0.0.1 include:_spf.good.test -all"
    assert without_bad_terms(record) == "v=spf1 ip4:127.0.0.1 -all"
    assert corrected(parse_spf("v=spf1 ip4:999.1.1.1 -all")) is None


def test_merge_keeps_every_term_once_and_the_strictest_all() -> None:
    merged = merge(["v=spf1 ip4:127.0.0.1 ~all", "v=spf1 mx ip4:127.0.0.1 -all"])
    assert merged == "v=spf1 ip4:127.0.0.1 mx -all"
    assert parse_spf(merged).valid
    assert merge(["v=spf1 a redirect=x.example", "v=spf1 mx"]) == "v=spf1 a mx redirect=x.example"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.1 ~all", "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 ~all"),
        ("v=spf1 mx redirect=_spf.example", "v=spf1 mx ip4:127.0.0.1 redirect=_spf.example"),
        ("v=spf1 mx", "v=spf1 mx ip4:127.0.0.1"),
        ("v=spf1 ip4:127.0.0.1 -all", "v=spf1 ip4:127.0.0.1 -all"),
    ],
)
def test_server_is_added_where_it_is_evaluated(record: str, expected: str) -> None:
    assert with_mechanisms(record, ["ip4:127.0.0.1"]) == expected
