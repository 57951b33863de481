"""dns.blocklist against the lab's blocklist zone (lab/zones.py: bl.blocklist.test lists
127.0.0.2, answers 127.0.0.3 with Spamhaus's refusal code and 127.0.0.4 outside 127/8) served by
the lab's NSD."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from lab import zones
from lab.lab import Lab
from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.runner import Selection
from smtpconn.checks.verify import verify_entries
from smtpconn.dns.resolvers import parse_resolver
from smtpconn.settings import Settings
from tests.conftest import CliInvoker
from tests.integration.verify.conftest import LAB_BLOCKLISTS, lab_entry

ONLY = Selection(only=("dns.blocklist",))


def blocklist_result(
    lab: Lab, host: str, *, lists: tuple[str, ...] = LAB_BLOCKLISTS, egress: tuple[str, ...] = ()
) -> CheckResult:
    entry = lab_entry(lab, "good.test")
    assert entry.outbound is not None
    entry = replace(entry, outbound=replace(entry.outbound, host=host))
    settings = Settings(
        resolvers=(parse_resolver(lab.resolver),),
        timeout=3,
        blocklists=lists,
        egress_addresses=egress,
    )
    report = asyncio.run(verify_entries(settings, Path("/"), [entry], selection=ONLY))
    [result] = report.addresses[0].checks
    return result


def test_the_lab_server_is_not_listed(lab: Lab) -> None:
    result = blocklist_result(lab, zones.MAIL_HOST)
    assert result.status is Status.PASS, result
    assert "127.0.0.1 on none of 1 blocklists" in result.summary


def test_a_listed_server_fails_naming_the_list_and_its_delisting_page(lab: Lab) -> None:
    result = blocklist_result(lab, "127.0.0.2")
    assert result.status is Status.FAIL, result
    assert f"127.0.0.2 on {zones.BLOCKLIST}" in result.summary
    assert zones.BLOCKLIST_DELIST in result.fix
    assert "listed for the lab" in result.detail  # the list's TXT reason


def test_the_egress_address_a_roundtrip_saw_is_looked_up_too(lab: Lab) -> None:
    result = blocklist_result(lab, zones.MAIL_HOST, egress=("127.0.0.2",))
    assert result.status is Status.FAIL and "127.0.0.2" in result.summary
    assert "127.0.0.1 on bl.blocklist.test: not listed" in result.detail


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.3", "Spamhaus-style refusal code"),
        ("127.0.0.4", "an answer outside 127/8"),
    ],
)
def test_refusal_codes_and_rewritten_answers_could_not_tell(lab: Lab, host: str, why: str) -> None:
    result = blocklist_result(lab, host)
    assert result.status is Status.ERROR, (why, result)
    assert result.summary.startswith("could not tell") and result.fix


def test_a_list_that_does_not_answer_could_not_tell_and_names_spamhaus(lab: Lab) -> None:
    """The lab's NSD refuses zen.spamhaus.org (not its zone), as a list refuses a resolver."""
    result = blocklist_result(lab, zones.MAIL_HOST, lists=("zen.spamhaus.org",))
    assert result.status is Status.ERROR, result
    assert "Spamhaus ZEN" in result.summary
    assert "Spamhaus refuses queries that come through public resolvers" in result.fix


def test_cli_fails_on_a_listed_server_and_rejects_bad_options(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_env: dict[str, str]
) -> None:
    profile = write_profile(["good.test"])
    profile.write_text(
        profile.read_text().replace(f'host = "{zones.MAIL_HOST}"', 'host = "127.0.0.2"')
    )
    args = ("verify", "--profile", str(profile), "--only", "dns.blocklist", "--json")
    listed = cli(*args)  # the list comes from SMTPCONN_BLOCKLISTS (the lab's env)
    assert listed.exit_code == 1, listed.output
    [check] = json.loads(listed.stdout)["addresses"][0]["checks"]
    assert check["id"] == "dns.blocklist" and check["status"] == "fail"
    assert zones.BLOCKLIST_DELIST in check["fix"]
    other = cli(*args, "--blocklist", "nowhere.test=https://nowhere.test/")
    assert json.loads(other.stdout)["addresses"][0]["checks"][0]["status"] == "error"
    bad = cli(*args, "--blocklist", "localhost")
    assert bad.exit_code == 2 and "not a blocklist zone" in bad.output
    bad_ip = cli(*args, "--egress-address", "mail.example")
    assert bad_ip.exit_code == 2 and "not an IP address" in bad_ip.output
    assert "Traceback" not in bad.output + bad_ip.output
