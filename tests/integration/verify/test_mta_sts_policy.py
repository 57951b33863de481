"""mta-sts.policy against real servers: the lab's HTTPS policy server (lab/mta_sts.py, lab CA,
certificate for the SNI name) and a second NSD serving one zone per defect, each resolving
mta-sts.<domain> to 127.0.0.1. Every defect gives its status, and the fix for an uncovered MX,
published on the server as it says, makes the check pass."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import zones
from lab.lab import Lab
from lab.mta_sts import PolicyServer, Response, policy_text
from lab.proc import free_ports
from lab.zones import MAIL_HOST, Domain, Record
from smtpconn.addresses import parse_address
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.runner import Selection
from smtpconn.checks.verify import verify_entries
from smtpconn.dns.resolvers import parse_resolver
from smtpconn.profile.model import Mode, SupportAddress, Workflow
from smtpconn.settings import Settings
from tests.integration.verify.untuned_zones import ScenarioNsd

ONLY_STS = Selection(only=("mta-sts",))
BACKUP = "backup.sts-uncovered.test"
GOOD_POLICY = policy_text(MAIL_HOST)

#: domain -> (what its policy server answers, the expected status, words of the summary)
CASES: dict[str, tuple[Response | None, Status, str]] = {
    "sts-good.test": (Response(GOOD_POLICY), Status.PASS, "covers every MX"),
    "sts-uncovered.test": (Response(GOOD_POLICY), Status.FAIL, BACKUP),
    "sts-testing.test": (Response(policy_text(MAIL_HOST, mode="testing")), Status.WARN, "testing"),
    "sts-redirect.test": (
        Response(b"", 301, headers={"Location": "https://www.sts-redirect.test/p"}),
        Status.FAIL,
        "redirects (HTTP 301",
    ),
    "sts-html.test": (Response(GOOD_POLICY, content_type="text/html"), Status.FAIL, "text/html"),
    "sts-big.test": (Response(GOOD_POLICY + b"x" * 70_000), Status.FAIL, "larger than 64 KB"),
    "sts-syntax.test": (
        Response(GOOD_POLICY.replace(b"STSv1", b"STSv2")),
        Status.FAIL,
        "version must be STSv1",
    ),
    "sts-404.test": (Response(b"gone\n", 404), Status.FAIL, "HTTP 404"),
    "sts-noaddr.test": (None, Status.FAIL, "has no address"),
}


def _zones(public: dict[str, bytes]) -> dict[str, list[Record]]:
    out = {}
    for name in CASES:
        records = zones.domain_records(Domain(name, "mta-sts.policy case"), public)
        if name == "sts-noaddr.test":
            records = [r for r in records if r.name != "mta-sts"]
        if name == "sts-uncovered.test":
            records += [
                Record("@", "MX", (f"20 {BACKUP}.",)),
                Record("backup", "A", (zones.MAIL_ADDR,)),
            ]
        out[name] = records
    return out


@pytest.fixture(scope="module")
def sts_dns(lab: Lab) -> Iterator[ScenarioNsd]:
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-sts-", dir="/tmp"))
    public = {name: key.public_der for name, key in lab.dkim_keys.items()}
    nsd = ScenarioNsd(directory / "dns", public, _zones(public))
    nsd.start()
    assert lab.mta_sts is not None
    for name, (response, _, _) in CASES.items():
        if response is not None:
            lab.mta_sts.responses[f"mta-sts.{name}"] = response
    try:
        yield nsd
    finally:
        for name in CASES:
            lab.mta_sts.responses.pop(f"mta-sts.{name}", None)
        nsd.stop()
        shutil.rmtree(directory, ignore_errors=True)


def settings(lab: Lab, nsd: ScenarioNsd, port: int | None = None) -> Settings:
    return Settings(
        resolvers=(parse_resolver(nsd.address),),
        ca_file=lab.ca_file,
        timeout=5,
        mta_sts_port=port or lab.state.mta_sts_port,
    )


def entry(domain: str) -> SupportAddress:
    return SupportAddress(
        parse_address(f"support@{domain}"), Mode.OUTBOUND_ONLY, Workflow.FORWARDING
    )


def policy_results(
    lab: Lab, nsd: ScenarioNsd, domains: list[str], port: int | None = None
) -> dict[str, CheckResult]:
    report = asyncio.run(
        verify_entries(
            settings(lab, nsd, port), Path("/"), [entry(d) for d in domains], selection=ONLY_STS
        )
    )
    return {
        a.address.split("@")[1]: next(c for c in a.checks if c.id == "mta-sts.policy")
        for a in report.addresses
    }


def test_each_defect_gives_its_status(lab: Lab, sts_dns: ScenarioNsd) -> None:
    assert lab.mta_sts is not None
    before = len(lab.mta_sts.requests)
    results = policy_results(lab, sts_dns, list(CASES))
    got = {d: (r.status, r.summary) for d, r in results.items()}
    for domain, (_, status, words) in CASES.items():
        assert got[domain][0] is status and words in got[domain][1], (domain, got[domain])
        if status is not Status.PASS:
            assert results[domain].fix
    # The verdicts come from real fetches, one per domain with an address.
    fetched = set(lab.mta_sts.requests[before:])
    assert fetched == {f"mta-sts.{d}" for d in CASES if d != "sts-noaddr.test"}
    # testing mode names the fix that turns enforcement on
    assert "mode: enforce" in results["sts-testing.test"].fix


def test_uncovered_mx_fix_published_as_printed_passes(lab: Lab, sts_dns: ScenarioNsd) -> None:
    assert lab.mta_sts is not None
    host = "mta-sts.sts-uncovered.test"
    result = policy_results(lab, sts_dns, ["sts-uncovered.test"])["sts-uncovered.test"]
    assert result.status is Status.FAIL
    assert result.fix.startswith(f"add mx: {BACKUP} to https://{host}/")
    # Publish the line the fix names, exactly, and run again.
    added = result.fix.removeprefix("add ").split(" to ", 1)[0].encode()
    lab.mta_sts.responses[host] = Response(GOOD_POLICY.replace(b"max_age", added + b"\r\nmax_age"))
    try:
        again = policy_results(lab, sts_dns, ["sts-uncovered.test"])["sts-uncovered.test"]
    finally:
        lab.mta_sts.responses[host] = CASES["sts-uncovered.test"][0] or Response()
    assert again.status is Status.PASS, again


def test_certificate_for_another_name_fails(lab: Lab, sts_dns: ScenarioNsd, tmp_path: Path) -> None:
    assert lab.ca is not None
    server = PolicyServer(lab.ca, tmp_path / "wrong", cert=lab.ca.wrong_host).start()
    try:
        result = policy_results(lab, sts_dns, ["sts-good.test"], port=server.port)["sts-good.test"]
    finally:
        server.stop()
    assert result.status is Status.FAIL and "TLS handshake" in result.summary
    assert "mta-sts.sts-good.test" in result.summary + result.detail + result.fix
    assert "Hostname mismatch" in result.summary or "hostname" in result.summary.lower()


def test_nothing_listening_fails_and_names_the_port(lab: Lab, sts_dns: ScenarioNsd) -> None:
    port = free_ports(1)[0]
    result = policy_results(lab, sts_dns, ["sts-good.test"], port=port)["sts-good.test"]
    assert result.status is Status.FAIL and "nothing accepts HTTPS" in result.summary
    assert f"port {port}" in result.detail


def test_policy_is_skipped_without_the_txt_record(lab: Lab) -> None:
    from tests.integration.verify.test_verify_lab import settings_for

    report = asyncio.run(
        verify_entries(settings_for(lab), Path("/"), [entry("nomtasts.test")], selection=ONLY_STS)
    )
    [policy] = [c for c in report.addresses[0].checks if c.id == "mta-sts.policy"]
    assert policy.status is Status.SKIP and "_mta-sts.nomtasts.test" in policy.summary
