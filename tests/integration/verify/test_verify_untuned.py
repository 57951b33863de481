"""verify against misconfigurations no check was tuned to, since checks that pass only the zones
they were written against prove nothing: a second NSD serves them (untuned_zones.py). Each gives the right id and status, every non-pass result has a
fix, and a fix that names a record is literal: published as printed, the check passes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.lab import Lab
from lab.zones import Record
from smtpconn.addresses import parse_address
from smtpconn.checks import catalogue
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.report import VerifyReport
from smtpconn.checks.runner import Selection
from smtpconn.checks.verify import verify_entries
from smtpconn.dns.resolvers import parse_resolver
from smtpconn.profile.model import (
    AuthMechanism,
    DkimSettings,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef
from smtpconn.settings import Settings
from tests.conftest import CliInvoker
from tests.integration.verify.conftest import LAB_BLOCKLISTS, SECRET_ENV, ScenarioDns
from tests.integration.verify.generated_zones import records_in
from tests.integration.verify.untuned_zones import SCENARIOS, Scenario

#: The zones' records; the server's blocklist entry (test_verify_blocklist.py) is left out, since
#: 127.0.0.2 (u-ptr.test's server) is the lab blocklist's listed test entry.
DNS_ONLY = Selection(skip=("tls", "auth", "dns.blocklist"))
DNS_IDS = [i for i in catalogue.ALL if not i.startswith(("tls.", "auth.")) and i != "dns.blocklist"]


def entry_for(lab: Lab, dns: ScenarioDns, scenario: Scenario) -> SupportAddress:
    key = dns.ed25519_key if scenario.key == "ed25519" else lab.dkim_keys[scenario.key].path
    return SupportAddress(
        parse_address(scenario.address),
        Mode.OUTBOUND_ONLY,
        Workflow.AUTHENTICATED,
        OutboundServer(
            scenario.host,
            587,
            Security.STARTTLS,
            AuthMechanism.AUTO,
            "support",
            SecretRef("env", SECRET_ENV),
        ),
        DkimSettings(scenario.selector, key) if scenario.selector else None,
    )


async def run(
    lab: Lab, dns: ScenarioDns, scenarios: list[Scenario], selection: Selection = DNS_ONLY
) -> VerifyReport:
    settings = Settings(
        resolvers=(parse_resolver(dns.nsd.address),),
        timeout=5,
        ca_file=lab.ca_file,
        mta_sts_port=lab.state.mta_sts_port,
    )
    entries = [entry_for(lab, dns, s) for s in scenarios]
    return await verify_entries(settings, Path("/"), entries, selection=selection)


def by_id(report: VerifyReport, address: str) -> dict[str, CheckResult]:
    [found] = [a for a in report.addresses if a.address == address]
    return {c.id: c for c in found.checks}


@pytest.fixture(scope="module")
def untuned_report(lab: Lab, scenario_dns: ScenarioDns) -> VerifyReport:
    """One run over every scenario, before any fix is published (module-scoped)."""
    import asyncio

    return asyncio.run(run(lab, scenario_dns, list(SCENARIOS.values())))


@pytest.mark.parametrize("domain", sorted(SCENARIOS))
def test_each_misconfiguration_gives_its_finding(untuned_report: VerifyReport, domain: str) -> None:
    scenario = SCENARIOS[domain]
    results = by_id(untuned_report, scenario.address)
    assert list(results) == DNS_IDS
    got = {i: r.status.value for i, r in results.items() if r.status is not Status.PASS}
    expected = {i: s for i, s in scenario.expected.items() if s != "pass"}
    assert got == expected, {i: results[i].summary for i in got}
    for result in results.values():
        if result.status is not Status.PASS:
            assert result.fix, f"{result.id} on {domain} has no fix"


def test_the_findings_say_what_is_wrong(untuned_report: VerifyReport) -> None:
    def result(domain: str, check_id: str) -> CheckResult:
        return by_id(untuned_report, SCENARIOS[domain].address)[check_id]

    redirect = result("u-redirect.test", "spf.lookups")
    assert "without an SPF record" in redirect.summary and "exceeds" not in redirect.summary
    assert '"v=spf1"' not in redirect.fix  # the old fix: an empty record, neutral for all
    assert "every address on the Internet" in result("u-includeall.test", "spf.record").summary
    assert "11 MX names" in result("u-mx11.test", "spf.lookups").summary
    assert "ip4:192.0.2.11" in result("u-mx11.test", "spf.lookups").fix
    assert "ed25519" in result("u-ed25519.test", "dkim.strength").summary
    assert result("u-ed25519.test", "dkim.key-match").status is Status.PASS
    assert "t=y" in result("u-dkimtesting.test", "dkim.key").summary
    assert "revoked" in result("u-revoked.test", "dkim.key").summary
    assert "base64" in result("u-dkimbase64.test", "dkim.key").summary
    org = result("help.u-orgdmarc.test", "dmarc.record")
    assert "_dmarc.u-orgdmarc.test" in org.summary and "organisational" in org.summary
    assert "sp=none" in result("sub.u-spnone.test", "dmarc.policy").summary
    assert "';' missing" in result("u-dmarcsyntax.test", "dmarc.record").summary
    assert 'delete "v=DMARC1; p=none"' in result("u-twodmarc.test", "dmarc.record").fix
    assert "CNAME" in result("u-mxcname.test", "dns.mx").summary
    assert "2001:db8::25" in result("u-v6only.test", "dns.reverse").fix
    assert "ip6:2001:db8::25" in result("u-v6only.test", "spf.authorizes").fix
    assert "other.u-ptr.test" in result("u-ptr.test", "dns.reverse").detail
    assert "CNAME loop" in result("u-cnameloop.test", "dns.server-address").summary


# ------------------------------------------------------------------------------------------
# Fixes are literal: publish what verify printed, run again, the check passes.


@pytest.fixture
def publish(scenario_dns: ScenarioDns) -> Iterator[Callable[[str, str, tuple[str, ...]], None]]:
    """Publish one record (replacing the owner's records of that type); zones are restored."""
    nsd = scenario_dns.nsd
    saved = {zone: list(records) for zone, records in nsd.extra.items()}
    touched: set[str] = set()

    def put(owner: str, rtype: str, data: tuple[str, ...]) -> None:
        zone = max((z for z in nsd.extra if owner == z or owner.endswith("." + z)), key=len)
        name = "@" if owner == zone else owner[: -len(zone) - 1]
        kept = [r for r in nsd.extra[zone] if not (r.name == name and r.rtype == rtype)]
        nsd.publish(zone, [*kept, Record(name, rtype, data)], (owner, rtype))
        touched.add(zone)

    yield put
    for zone in touched:
        nsd.publish(zone, saved[zone], (zone, "SOA"))


FIXES = [
    # (domain, the check whose fix is published, the checks that must then pass)
    ("u-redirect.test", "spf.lookups", ("spf.lookups", "spf.authorizes")),
    ("u-includeall.test", "spf.record", ("spf.record", "spf.lookups", "spf.authorizes")),
    ("u-mx11.test", "spf.lookups", ("spf.lookups", "spf.authorizes")),
    ("u-dkimtesting.test", "dkim.key", ("dkim.key", "dkim.key-match")),
    ("u-revoked.test", "dkim.key", ("dkim.key", "dkim.key-match", "dmarc.alignment")),
    ("u-dkimbase64.test", "dkim.key", ("dkim.key", "dkim.key-match")),
    ("sub.u-spnone.test", "dmarc.policy", ("dmarc.record", "dmarc.policy")),
    ("u-dmarcsyntax.test", "dmarc.record", ("dmarc.record", "dmarc.policy")),
    ("u-twodmarc.test", "dmarc.record", ("dmarc.record", "dmarc.policy")),
    ("u-mxcname.test", "dns.mx", ("dns.mx",)),
    ("u-v6only.test", "spf.authorizes", ("spf.authorizes",)),
    ("u-ptr.test", "dns.reverse", ("dns.reverse",)),
]


@pytest.mark.parametrize(("domain", "check_id", "then_pass"), FIXES, ids=[f[0] for f in FIXES])
async def test_publishing_the_fix_makes_the_check_pass(
    lab: Lab,
    scenario_dns: ScenarioDns,
    untuned_report: VerifyReport,
    publish: Callable[[str, str, tuple[str, ...]], None],
    domain: str,
    check_id: str,
    then_pass: tuple[str, ...],
) -> None:
    scenario = SCENARIOS[domain]
    before = by_id(untuned_report, scenario.address)[check_id]
    assert before.status is not Status.PASS
    records = records_in(before.fix)[:1]
    assert records, f"no literal record in the fix: {before.fix}"
    for record in records:
        publish(*record)
    after = by_id(await run(lab, scenario_dns, [scenario]), scenario.address)
    assert {i: after[i].status.value for i in then_pass} == dict.fromkeys(then_pass, "pass"), {
        i: after[i].summary for i in then_pass
    }


# ------------------------------------------------------------------------------------------
# The command line on the same scenarios: table, --json, --junit, exit codes.


def write_profile(lab: Lab, dns: ScenarioDns, path: Path, scenarios: list[Scenario]) -> Path:
    lines = ["version = 1", ""]
    for s in scenarios:
        key = dns.ed25519_key if s.key == "ed25519" else lab.dkim_keys[s.key].path
        lines += [
            "[[addresses]]",
            f'address = "{s.address}"',
            'mode = "outbound-only"',
            'workflow = "authenticated"',
            "[addresses.outbound]",
            f'host = "{s.host}"',
            f"port = {lab.ports['submission']}",
            f'username = "{lab.user.username}"',
            f'secret = "env:{SECRET_ENV}"',
            "[addresses.dkim]",
            f'selector = "{s.selector}"',
            f'private_key = "{key}"',
            "",
        ]
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


@pytest.fixture
def cli_env(lab: Lab, scenario_dns: ScenarioDns) -> dict[str, str]:
    return {
        "SMTPCONN_RESOLVER": scenario_dns.nsd.address,
        "SMTPCONN_CA_FILE": str(lab.ca_file),
        "SMTPCONN_MTA_STS_PORT": str(lab.state.mta_sts_port),
        "SMTPCONN_BLOCKLISTS": ",".join(LAB_BLOCKLISTS),
        SECRET_ENV: lab.user.password,
        "COLUMNS": "250",
    }


def test_cli_table_json_and_junit_on_the_scenarios(
    lab: Lab,
    scenario_dns: ScenarioDns,
    tmp_path: Path,
    cli: CliInvoker,
    cli_env: dict[str, str],
) -> None:
    chosen = [SCENARIOS[d] for d in ("u-includeall.test", "u-dmarcsyntax.test", "u-ed25519.test")]
    profile = str(write_profile(lab, scenario_dns, tmp_path / "p.toml", chosen))
    junit = tmp_path / "junit.xml"
    table = cli("verify", "--profile", profile, "--no-color", env=cli_env)
    assert table.exit_code == 1, table.output
    assert "every address on the Internet" in table.stdout and "fix:" in table.stdout
    assert lab.user.password not in table.output

    as_json = cli("verify", "--profile", profile, "--json", "--junit", str(junit), env=cli_env)
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert lab.user.password not in as_json.output and lab.user.password not in junit.read_text()
    statuses = {(a["address"], c["id"]): c["status"] for a in doc["addresses"] for c in a["checks"]}
    assert statuses[("support@u-includeall.test", "spf.record")] == "fail"
    assert statuses[("support@u-dmarcsyntax.test", "dmarc.record")] == "fail"
    # The Postfix submission port is a good server: TLS/AUTH pass for every address.
    assert statuses[("support@u-ed25519.test", "auth.login")] == "pass"
    assert doc["summary"]["fail"] == sum(1 for s in statuses.values() if s == "fail")
    root = ET.parse(junit).getroot()
    assert int(root.get("tests", "0")) == len(statuses)
    assert int(root.get("failures", "0")) == doc["summary"]["fail"]
    failed = {
        (case.get("classname"), case.get("name"))
        for case in root.iter("testcase")
        if case.find("failure") is not None
    }
    assert ("support@u-includeall.test", "spf.record") in failed


def test_some_checks_could_not_tell_none_failed_exits_0_and_says_so(
    lab: Lab,
    scenario_dns: ScenarioDns,
    tmp_path: Path,
    cli: CliInvoker,
    cli_env: dict[str, str],
) -> None:
    """DNS is fine, the server's port is closed: the DNS verdicts stand (exit 0), and every
    output says that the TLS/AUTH part could not be completed."""
    from lab.proc import free_ports

    profile_path = write_profile(
        lab, scenario_dns, tmp_path / "p.toml", [SCENARIOS["u-ed25519.test"]]
    )
    profile_path.write_text(
        profile_path.read_text().replace(
            f"port = {lab.ports['submission']}", f"port = {free_ports(1)[0]}"
        )
    )
    profile = str(profile_path)
    table = cli("verify", "--profile", profile, "--no-color", env=cli_env)
    assert table.exit_code == 0, table.output
    assert "1 check could not be completed" in table.stdout
    as_json = cli("verify", "--profile", profile, "--json", env=cli_env)
    assert as_json.exit_code == 0
    summary = json.loads(as_json.stdout)["summary"]
    assert summary["error"] == 1 and summary["fail"] == 0 and summary["pass"] > 0
    # Only the part that could not be checked: nothing reached a verdict, exit 3.
    only_tls = cli("verify", "--profile", profile, "--only", "tls,auth", "--json", env=cli_env)
    assert only_tls.exit_code == 3


def test_help_states_the_exit_code_policy(cli: CliInvoker, cli_env: dict[str, str]) -> None:
    result = cli("verify", "--help", env={**cli_env, "COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "3 nothing could be checked" in text and "counted in the output" in text
