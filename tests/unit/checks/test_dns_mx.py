"""dns.mx judged from hand-built answers: the classifiers beside the MX lookups."""

from __future__ import annotations

from smtpconn.checks.dns_checks import MxHost, judge_mx_hosts, judge_no_mx, parse_mx
from smtpconn.checks.model import Status
from smtpconn.dns import DnsAnswer, DnsOutcome

PUBLISH = "publish: ex.test. MX 10 mail.ex.test."


def answer(rdtype: str, outcome: DnsOutcome, *records: str, error: str = "") -> DnsAnswer:
    return DnsAnswer("ex.test", rdtype, outcome, records, error)


def test_mx_records_are_sorted_by_preference_without_the_root_dot() -> None:
    assert parse_mx(("20 b.ex.test.", "10 a.ex.test.", "0 .")) == [
        (0, ""),
        (10, "a.ex.test"),
        (20, "b.ex.test"),
    ]


def test_no_mx_but_an_address_is_the_implicit_mx() -> None:
    answers = (
        answer("MX", DnsOutcome.NODATA),
        answer("A", DnsOutcome.OK, "192.0.2.1"),
        answer("AAAA", DnsOutcome.ERROR, error="timeout"),
    )
    result = judge_no_mx("ex.test", "support@ex.test", answers, PUBLISH)
    assert result.status is Status.WARN and "implicit MX" in result.summary
    assert result.detail == "192.0.2.1" and result.fix == PUBLISH


def test_no_mx_and_no_address_fails_unless_a_lookup_could_not_tell() -> None:
    nothing = (
        answer("MX", DnsOutcome.NXDOMAIN),
        answer("A", DnsOutcome.NXDOMAIN),
        answer("AAAA", DnsOutcome.NXDOMAIN),
    )
    result = judge_no_mx("ex.test", "support@ex.test", nothing, PUBLISH)
    assert result.status is Status.FAIL and "support@ex.test cannot be delivered" in result.summary
    assert result.detail == "MX nxdomain, A nxdomain, AAAA nxdomain"
    unsure = (nothing[0], answer("A", DnsOutcome.ERROR, error="SERVFAIL"), nothing[2])
    result = judge_no_mx("ex.test", "support@ex.test", unsure, PUBLISH)
    assert result.status is Status.ERROR and result.detail == "SERVFAIL"


def test_every_host_resolving_passes() -> None:
    hosts = [MxHost(10, "a.ex.test", resolves=True), MxHost(20, "b.ex.test", resolves=True)]
    result = judge_mx_hosts("ex.test", hosts, PUBLISH)
    assert result.status is Status.PASS
    assert result.summary == "ex.test receives mail at a.ex.test, b.ex.test"
    assert result.detail == "MX 10 a.ex.test, 20 b.ex.test"


def test_an_mx_naming_an_alias_warns_with_the_canonical_records() -> None:
    hosts = [
        MxHost(10, "a.ex.test", resolves=True, alias="real.ex.test"),
        MxHost(20, "b.ex.test", resolves=True),
    ]
    result = judge_mx_hosts("ex.test", hosts, PUBLISH)
    assert result.status is Status.WARN and "a.ex.test → real.ex.test" in result.summary
    assert "ex.test. MX 10 real.ex.test.; ex.test. MX 20 b.ex.test." in result.fix


def test_hosts_that_do_not_resolve() -> None:
    some = [MxHost(10, "a.ex.test", resolves=True), MxHost(20, "b.ex.test")]
    result = judge_mx_hosts("ex.test", some, PUBLISH)
    assert result.status is Status.WARN and result.summary.endswith("do not resolve: b.ex.test")
    none = [MxHost(10, "b.ex.test")]
    result = judge_mx_hosts("ex.test", none, PUBLISH)
    assert result.status is Status.FAIL and PUBLISH in result.fix


def test_hosts_whose_lookups_could_not_tell() -> None:
    unsure = [MxHost(10, "a.ex.test", errors=("timeout",)), MxHost(20, "b.ex.test")]
    result = judge_mx_hosts("ex.test", unsure, PUBLISH)
    assert result.status is Status.ERROR and result.detail == "timeout"


def test_an_mx_naming_an_ip_address_fails_and_names_a_host_instead() -> None:
    from smtpconn.checks.dns_checks import judge_ip_literals

    only = judge_ip_literals("ex.test", [(10, "192.0.2.1")], "mail.ex.test")
    assert only is not None and only.status is Status.FAIL
    assert "names an IP address (192.0.2.1)" in only.summary
    assert "with: ex.test. MX 10 mail.ex.test." in only.fix
    mixed = judge_ip_literals("ex.test", [(10, "a.ex.test"), (20, "192.0.2.1")], "mail.ex.test")
    assert mixed is not None and mixed.status is Status.WARN
    assert mixed.fix.startswith("remove the MX records naming 192.0.2.1")
    assert judge_ip_literals("ex.test", [(10, "a.ex.test")], "mail.ex.test") is None
