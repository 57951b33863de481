"""Worst-case limit counting (RFC 7208 §4.6.4) and the evaluation verdict through our resolver."""

from __future__ import annotations

from smtpconn.addresses import parse_address
from smtpconn.checks.model import Status
from smtpconn.checks.spf import run_spf
from smtpconn.checks.spf_limits import (
    count_limits,
    flattened_record,
    included_pass_terms,
    mx_hosts,
)
from smtpconn.checks.spf_syntax import parse_spf
from smtpconn.profile.model import (
    AuthMechanism,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef
from tests.unit.checks.fakedns import FakeResolver, context


def nested(n_includes: int, per: int) -> dict[tuple[str, str], list[str]]:
    records: dict[tuple[str, str], list[str]] = {}
    includes = " ".join(f"include:_s{i}.ex.test" for i in range(n_includes))
    records[("ex.test", "TXT")] = [f"v=spf1 {includes} ip4:127.0.0.1 -all"]
    for i in range(n_includes):
        terms = " ".join(f"a:h{i}-{j}.ex.test" for j in range(per))
        records[(f"_s{i}.ex.test", "TXT")] = [f"v=spf1 {terms} -all"]
        for j in range(per):
            records[(f"h{i}-{j}.ex.test", "A")] = [f"192.0.2.{i * 10 + j}"]
    return records


async def test_nested_includes_are_counted_in_full() -> None:
    fake = FakeResolver(nested(4, 3))
    record = parse_spf(fake.records[("ex.test", "TXT")][0])
    report = await count_limits(fake, "ex.test", record)
    assert report.lookups == 16 and report.void == 0 and report.over


async def test_flattened_fix_is_within_the_limits_and_keeps_the_addresses() -> None:
    fake = FakeResolver(nested(4, 3))
    report = await count_limits(fake, "ex.test", parse_spf(fake.records[("ex.test", "TXT")][0]))
    flat = flattened_record(report)
    assert "ip4:192.0.2.32" in flat and "ip4:127.0.0.1" in flat and flat.endswith(" -all")
    again = await count_limits(fake, "ex.test", parse_spf(flat))
    assert again.lookups == 0 and not again.over


async def test_void_lookups_and_all_stops_the_walk() -> None:
    fake = FakeResolver({("ex.test", "TXT"): ["x"]})
    record = parse_spf("v=spf1 a:v1.ex.test mx:v2.ex.test include:v3.ex.test -all a:after.ex.test")
    report = await count_limits(fake, "ex.test", record)
    assert report.lookups == 3 and report.void == 3
    # A target without SPF is its own finding (what to publish there), not a limit problem.
    assert report.missing == [("include:v3.ex.test", "v3.ex.test")] and not report.problems
    assert ("after.ex.test", "A") not in fake.questions


async def test_redirect_counts_only_without_all_and_loops_are_found() -> None:
    fake = FakeResolver(
        {
            ("ex.test", "TXT"): ["v=spf1 redirect=loop.ex.test"],
            ("loop.ex.test", "TXT"): ["v=spf1 include:ex.test"],
        }
    )
    report = await count_limits(fake, "ex.test", parse_spf("v=spf1 redirect=loop.ex.test"))
    assert report.lookups == 2 and any("loops back" in p for p in report.problems)
    plain = await count_limits(fake, "ex.test", parse_spf("v=spf1 -all redirect=x.test"))
    assert plain.lookups == 0


async def test_more_than_ten_mx_names_is_a_problem() -> None:
    records = {("ex.test", "MX"): [f"{i} mx{i}.ex.test." for i in range(11)]}
    records.update({(f"mx{i}.ex.test", "A"): [f"192.0.2.{i}"] for i in range(11)})
    report = await count_limits(FakeResolver(records), "ex.test", parse_spf("v=spf1 mx -all"))
    assert any("11 MX names" in p for p in report.problems)


async def test_dns_error_is_reported_not_counted_as_void() -> None:
    fake = FakeResolver({}, broken={"down.ex.test"})
    report = await count_limits(fake, "ex.test", parse_spf("v=spf1 a:down.ex.test -all"))
    assert report.errors and report.void == 0


def entry(domain: str, host: str = "mail.ex.test") -> SupportAddress:
    return SupportAddress(
        parse_address(f"support@{domain}"),
        Mode.OUTBOUND_ONLY,
        Workflow.AUTHENTICATED,
        OutboundServer(
            host, 587, Security.STARTTLS, AuthMechanism.AUTO, "u", SecretRef("env", "X")
        ),
    )


async def test_authorizes_uses_our_resolver_and_its_fix_makes_it_pass() -> None:
    records = {
        ("ex.test", "TXT"): ["v=spf1 ip4:192.0.2.1 ~all"],
        ("mail.ex.test", "A"): ["198.51.100.7"],
    }
    fake = FakeResolver(records)
    results = {r.id: r for r in await run_spf(context(fake), entry("ex.test"))}
    result = results["spf.authorizes"]
    assert result.status is Status.FAIL and "softfail" in result.summary
    assert 'ex.test. TXT "v=spf1 ip4:192.0.2.1 ip4:198.51.100.7 ~all"' in result.fix
    # pyspf asked our resolver (not the system's) for the record
    assert fake.questions[("ex.test", "TXT")] >= 1

    records[("ex.test", "TXT")] = ["v=spf1 ip4:192.0.2.1 ip4:198.51.100.7 ~all"]
    fixed = {r.id: r for r in await run_spf(context(FakeResolver(records)), entry("ex.test"))}
    assert fixed["spf.authorizes"].status is Status.PASS


async def test_dns_failure_during_evaluation_is_error_not_fail() -> None:
    records = {
        ("ex.test", "TXT"): ["v=spf1 a:down.ex.test -all"],
        ("mail.ex.test", "A"): ["198.51.100.7"],
    }
    fake = FakeResolver(records, broken={"down.ex.test"})
    results = {r.id: r for r in await run_spf(context(fake), entry("ex.test"))}
    assert results["spf.authorizes"].status is Status.ERROR
    assert results["spf.lookups"].status is Status.ERROR


def test_pyspf_keeps_its_own_lookup_outside_a_run() -> None:
    import spf

    from smtpconn.dns import sync as syncdns

    syncdns._install_spf_dispatch()
    assert spf.DNSLookup is syncdns._spf_dispatch
    assert getattr(syncdns._local, "bridge", None) is None  # falls back to pyspf's own


async def test_plus_all_reached_through_an_include_or_redirect_is_permissive() -> None:
    fake = FakeResolver(
        {
            ("open.ex.test", "TXT"): ["v=spf1 +all"],
            ("shut.ex.test", "TXT"): ["v=spf1 -all"],
        }
    )
    record = parse_spf("v=spf1 include:shut.ex.test include:open.ex.test -all")
    report = await count_limits(fake, "ex.test", record)
    assert report.permissive == [("include:open.ex.test", "open.ex.test")]
    top = await count_limits(fake, "ex.test", parse_spf("v=spf1 ip4:192.0.2.1 all"))
    assert top.permissive == [("all", "ex.test")]
    # "-include:" of an open record fails every address: not permissive.
    negated = await count_limits(
        fake, "ex.test", parse_spf("v=spf1 -include:open.ex.test ip4:192.0.2.1 ~all")
    )
    assert negated.permissive == []


async def test_mx_over_ten_names_keeps_every_host_in_the_flattened_record() -> None:
    answers: dict[tuple[str, str], list[str]] = {
        ("ex.test", "MX"): [f"{n} mx{n}.ex.test." for n in range(1, 12)],
        ("ex.test", "A"): ["192.0.2.77"],
    }
    answers.update({(f"mx{n}.ex.test", "A"): [f"198.51.100.{n}"] for n in range(1, 12)})
    report = await count_limits(FakeResolver(answers), "ex.test", parse_spf("v=spf1 a/24 mx -all"))
    assert any("11 MX names" in p for p in report.problems)
    assert "ip4:198.51.100.11" in report.flattened
    # a/24 is flattened to the network receivers match, not to a host with a prefix length.
    assert report.flattened[0] == "ip4:192.0.2.0/24"


def test_mx_hosts_are_the_names_without_preference_or_root_dot() -> None:
    assert mx_hosts(("10 mx1.ex.test.", "20 mx2.ex.test", "0 .")) == [
        "mx1.ex.test",
        "mx2.ex.test",
        "",
    ]


def test_an_include_keeps_only_inner_pass_terms_with_its_own_qualifier() -> None:
    inner = ["ip4:192.0.2.1", "+ip4:192.0.2.2", "-ip4:192.0.2.3", "~a:x.test", "?mx", "all", "+all"]
    assert included_pass_terms("+", inner) == ["ip4:192.0.2.1", "ip4:192.0.2.2"]
    assert included_pass_terms("~", ["ip4:192.0.2.1", "-all"]) == ["~ip4:192.0.2.1"]


def test_an_inner_explicit_plus_gives_way_to_the_includes_qualifier() -> None:
    # "~+ip4:…" would be two qualifiers on one term: not SPF, and the fix would not parse.
    terms = included_pass_terms("~", ["+ip4:192.0.2.2", "+a:mail.x.test"])
    assert terms == ["~ip4:192.0.2.2", "~a:mail.x.test"]
    record = parse_spf(" ".join(["v=spf1", *terms, "-all"]))
    assert [t.qualifier for t in record.evaluated_terms()][:2] == ["~", "~"]
