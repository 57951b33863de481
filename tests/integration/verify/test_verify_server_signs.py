"""A DKIM selector without a private key: the customer's server signs. verify judges the key it
publishes (dkim.key, dkim.strength) against the lab's NSD, skips dkim.key-match with that reason,
and DMARC alignment still counts the server's DKIM signature."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from lab.lab import Lab
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.runner import Selection
from smtpconn.checks.verify import verify_entries
from smtpconn.profile.model import DkimSettings
from tests.integration.verify.conftest import lab_entry
from tests.integration.verify.test_verify_lab import settings_for

ONLY = Selection(only=("dkim", "dmarc"))


def results(lab: Lab, domain: str, selector: str) -> dict[str, CheckResult]:
    entry = replace(lab_entry(lab, domain), dkim=DkimSettings(selector))
    report = asyncio.run(verify_entries(settings_for(lab), Path("/"), [entry], selection=ONLY))
    return {c.id: c for c in report.addresses[0].checks}


def test_server_signed_selector_is_judged_and_key_match_skipped(lab: Lab) -> None:
    got = results(lab, "good.test", "sel2048")
    assert got["dkim.key"].status is Status.PASS
    assert got["dkim.strength"].status is Status.PASS and "2048" in got["dkim.strength"].summary
    match = got["dkim.key-match"]
    assert match.status is Status.SKIP
    assert "your server signs with selector sel2048" in match.summary
    assert "roundtrip" in match.fix
    assert got["dmarc.alignment"].status is Status.PASS


def test_weak_server_key_warns(lab: Lab) -> None:
    got = results(lab, "dkim1024.test", "sel1024")
    assert got["dkim.strength"].status is Status.WARN
    assert got["dkim.key-match"].status is Status.SKIP


def test_unpublished_server_selector_fails_with_the_servers_fix(lab: Lab) -> None:
    got = results(lab, "good.test", "selector1")
    key = got["dkim.key"]
    assert key.status is Status.FAIL and "selector1._domainkey.good.test" in key.summary
    assert "Microsoft 365" in key.fix and "openssl genpkey" not in key.fix
    assert got["dkim.key-match"].status is Status.SKIP
