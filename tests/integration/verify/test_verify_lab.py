"""verify against the lab's real NSD: each broken zone gives its finding (id, status, fix), the
good domains pass everything, the resolver is asked each question once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab import zones
from lab.lab import Lab
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.report import VerifyReport
from smtpconn.checks.runner import Selection, catalogue
from smtpconn.checks.verify import MAX_DNS_IN_FLIGHT, make_resolver_for_run, verify_entries
from smtpconn.dns import CachingResolver
from smtpconn.dns.resolvers import make_resolver, parse_resolver
from smtpconn.profile.model import Workflow
from smtpconn.settings import Settings
from tests.integration.verify.conftest import LAB_BLOCKLISTS, lab_entry

DNS_ONLY = Selection(skip=("tls", "auth"))
DNS_IDS = [i for i in catalogue() if not i.startswith(("tls.", "auth."))]

# domain -> the non-pass results its one defect produces (everything else must pass)
EXPECTED: dict[str, dict[str, Status]] = {
    "good.test": {},
    "helpdesk.test": {},
    "splittxt.test": {},
    "nospf.test": {
        "spf.record": Status.FAIL,
        "spf.lookups": Status.SKIP,
        "spf.authorizes": Status.SKIP,
    },
    "twospf.test": {
        "spf.record": Status.FAIL,
        "spf.lookups": Status.SKIP,
        "spf.authorizes": Status.SKIP,
    },
    "spfsyntax.test": {
        "spf.record": Status.FAIL,
        "spf.lookups": Status.SKIP,
        "spf.authorizes": Status.SKIP,
    },
    # The limits make the record a permerror for receivers, so the server is not authorised.
    "spflookups.test": {"spf.lookups": Status.FAIL, "spf.authorizes": Status.FAIL},
    "spfvoid.test": {"spf.lookups": Status.FAIL, "spf.authorizes": Status.FAIL},
    "softfail.test": {"spf.authorizes": Status.FAIL},
    "dkim1024.test": {"dkim.strength": Status.WARN},
    "dkim512.test": {"dkim.strength": Status.FAIL},
    # DMARC still passes through SPF, but only through SPF: a warning.
    "dkimmismatch.test": {"dkim.key-match": Status.FAIL, "dmarc.alignment": Status.WARN},
    "nodmarc.test": {
        "dmarc.record": Status.FAIL,
        "dmarc.policy": Status.SKIP,
        "dmarc.alignment": Status.SKIP,
    },
    "dmarcnone.test": {"dmarc.policy": Status.WARN},
    "nomx.test": {"dns.mx": Status.FAIL},
    "nomtasts.test": {
        "mta-sts": Status.WARN,
        "mta-sts.policy": Status.SKIP,
        "tls-rpt": Status.WARN,
    },
}


def settings_for(lab: Lab, timeout: float = 5) -> Settings:
    return Settings(
        resolvers=(parse_resolver(lab.resolver),),
        timeout=timeout,
        ca_file=lab.ca_file,
        mta_sts_port=lab.state.mta_sts_port,
        blocklists=LAB_BLOCKLISTS,
    )


@pytest.fixture(scope="module")
def lab_run(lab: Lab) -> tuple[VerifyReport, CachingResolver]:
    """One run over every lab domain (module-scoped: the zones never change)."""
    import asyncio

    settings = settings_for(lab)
    resolver = CachingResolver(make_resolver(settings.resolvers, timeout=settings.timeout))
    entries = [lab_entry(lab, d.name) for d in zones.DOMAINS]
    report = asyncio.run(
        verify_entries(settings, Path("/"), entries, selection=DNS_ONLY, resolver=resolver)
    )
    return report, resolver


def by_id(report: VerifyReport, address: str) -> dict[str, CheckResult]:
    [found] = [a for a in report.addresses if a.address == address]
    return {c.id: c for c in found.checks}


def test_every_domain_is_covered() -> None:
    assert set(EXPECTED) == {d.name for d in zones.DOMAINS}


@pytest.mark.parametrize("domain", sorted(EXPECTED))
def test_domain_gives_exactly_its_findings(
    lab_run: tuple[VerifyReport, CachingResolver], domain: str
) -> None:
    report, _ = lab_run
    results = by_id(report, f"support@{domain}")
    assert list(results) == DNS_IDS
    got = {i: r.status for i, r in results.items() if r.status is not Status.PASS}
    assert got == EXPECTED[domain], {i: results[i].summary for i in got}
    for result in results.values():
        if result.status is not Status.PASS:
            assert result.fix, f"{result.id} on {domain} has no fix"


def test_each_question_is_asked_once(lab_run: tuple[VerifyReport, CachingResolver]) -> None:
    _, resolver = lab_run
    assert resolver.questions, "nothing was asked"
    assert max(resolver.questions.values()) == 1, resolver.questions.most_common(3)
    # Shared names (the mail server, its PTR) were asked once although 16 addresses need them.
    assert resolver.questions[(zones.MAIL_HOST, "A")] == 1
    assert resolver.questions[("1.0.0.127.in-addr.arpa", "PTR")] == 1


def fix_of(lab_run: tuple[VerifyReport, CachingResolver], domain: str, check_id: str) -> str:
    return by_id(lab_run[0], f"support@{domain}")[check_id].fix


def test_spf_fixes_are_literal_records(lab_run: tuple[VerifyReport, CachingResolver]) -> None:
    assert "merge into: v=spf1 ip4:127.0.0.1 mx -all" in fix_of(
        lab_run, "twospf.test", "spf.record"
    )
    # softfail: existing terms kept, the server added before the all term
    assert 'softfail.test. TXT "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 ~all"' in fix_of(
        lab_run, "softfail.test", "spf.authorizes"
    )
    assert 'nospf.test. TXT "v=spf1 a:mail.good.test -all"' in fix_of(
        lab_run, "nospf.test", "spf.record"
    )
    syntax = fix_of(lab_run, "spfsyntax.test", "spf.record")
    assert "include:_spf.good.test" in syntax and "v=spf1 ip4:127.0.0.1 -all" in syntax
    void = fix_of(lab_run, "spfvoid.test", "spf.lookups")
    assert 'spfvoid.test. TXT "v=spf1 ip4:127.0.0.1 -all"' in void
    flat = fix_of(lab_run, "spflookups.test", "spf.lookups")
    assert "ip4:192.0.2.42" in flat and "include:" not in flat.split("TXT", 1)[1]
    summary = by_id(lab_run[0], "support@spflookups.test")["spf.lookups"].summary
    assert "16 DNS-mechanism lookups" in summary


def test_dkim_fix_is_split_txt_of_the_held_key(
    lab: Lab, lab_run: tuple[VerifyReport, CachingResolver]
) -> None:
    import base64
    import re

    fix = fix_of(lab_run, "dkimmismatch.test", "dkim.key-match")
    assert "sel2048._domainkey.dkimmismatch.test. TXT" in fix
    strings = re.findall(r'"([^"]*)"', fix)
    assert len(strings) >= 2 and all(len(s.encode()) <= 255 for s in strings)
    joined = "".join(strings)
    main_der = lab.dkim_keys["main"].public_der
    assert joined == "v=DKIM1; k=rsa; p=" + base64.b64encode(main_der).decode()


def test_dmarc_fix_is_a_starter_record(lab_run: tuple[VerifyReport, CachingResolver]) -> None:
    assert (
        '_dmarc.nodmarc.test. TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@nodmarc.test"'
        in fix_of(lab_run, "nodmarc.test", "dmarc.record")
    )
    assert "p=quarantine" in fix_of(lab_run, "dmarcnone.test", "dmarc.policy")


async def test_forwarding_address_skips_server_checks(lab: Lab) -> None:
    entry = lab_entry(lab, "good.test", workflow=Workflow.FORWARDING)
    report = await verify_entries(settings_for(lab), Path("/"), [entry], selection=DNS_ONLY)
    results = by_id(report, "support@good.test")
    for check_id in ("dns.server-address", "dns.reverse", "spf.authorizes", "dmarc.alignment"):
        assert results[check_id].status is Status.SKIP
        assert "forwarding" in results[check_id].summary
    assert results["dns.mx"].status is Status.PASS
    assert results["spf.record"].status is Status.PASS


async def test_dmarc_tree_walk_finds_the_organisational_record(lab: Lab) -> None:
    from dataclasses import replace

    from smtpconn.addresses import parse_address

    # a.b.c.good.test has no records of its own: the walk reaches _dmarc.good.test.
    entry = replace(lab_entry(lab, "good.test"), address=parse_address("support@a.b.c.good.test"))
    report = await verify_entries(
        settings_for(lab), Path("/"), [entry], selection=Selection(only=("dmarc.record",))
    )
    [result] = report.addresses[0].checks
    assert result.status is Status.PASS
    assert "_dmarc.good.test" in result.summary


async def test_300_addresses_on_300_domains_run_concurrently(lab: Lab) -> None:
    """Domains under good.test that do not exist: every DNS answer is real (NXDOMAIN), each
    question is asked once, and the run takes about as long as one address."""
    from dataclasses import replace

    from smtpconn.addresses import parse_address

    base = lab_entry(lab, "good.test")
    entries = [
        replace(base, address=parse_address(f"support@d{i}.good.test"), dkim=None)
        for i in range(300)
    ]
    # The lab's NSD has response-rate limiting off, so this measures verify, not NSD.
    assert lab.dns is not None
    settings = Settings(
        resolvers=((lab.dns.host, lab.dns.port),), timeout=5, blocklists=LAB_BLOCKLISTS
    )
    resolver = CachingResolver(make_resolver_for_run(settings), max_in_flight=MAX_DNS_IN_FLIGHT)
    started = time.monotonic()
    report = await verify_entries(
        settings, Path("/"), entries, selection=DNS_ONLY, resolver=resolver
    )
    elapsed = time.monotonic() - started
    assert len(report.addresses) == 300
    assert all(len(a.checks) == len(DNS_IDS) for a in report.addresses)
    assert report.summary()["error"] == 0
    assert by_id(report, "support@d7.good.test")["dns.mx"].status is Status.FAIL
    assert max(resolver.questions.values()) == 1
    # One address takes a few round trips; 300 in sequence would take 300 times that.
    assert elapsed < 10, f"300 addresses took {elapsed:.1f} s"
