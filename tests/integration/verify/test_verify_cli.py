"""``smtpconn verify`` as users run it: JSON and JUnit that parse, exit codes, a resolver that
does not answer (error + exit 3, never fail), the deadline, and no secret in any output."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.dns import BlackHoleResolver, ServfailResolver
from lab.lab import Lab
from tests.conftest import CliInvoker, run_smtpconn
from tests.integration.verify.conftest import SECRET_VALUE

SKIP_TLS = ("--skip", "tls,auth")


@pytest.fixture(autouse=True)
def _lab_env(lab_env: dict[str, str]) -> None:
    """The lab's CA and MTA-STS policy port (mta-sts.policy fetches from the lab's server)."""


def test_good_domain_passes_and_exits_0(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    profile = write_profile(["good.test", "splittxt.test"])
    junit = tmp_path / "verify.xml"
    result = cli(
        "verify",
        "--profile",
        str(profile),
        "--resolver",
        lab.resolver,
        *SKIP_TLS,
        "--json",
        "--junit",
        str(junit),
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["pass"] == 2 * 16 and doc["summary"]["fail"] == 0
    assert doc["insecure"] is False
    assert [a["address"] for a in doc["addresses"]] == [
        "support@good.test",
        "support@splittxt.test",
    ]
    for address in doc["addresses"]:
        for check in address["checks"]:
            assert set(check) == {"id", "status", "summary", "detail", "fix"}
    suites = ET.parse(junit).getroot()
    assert suites.get("tests") == "32" and suites.get("failures") == "0"


def test_broken_domains_exit_1_with_fixes_in_json_and_junit(
    lab: Lab, write_profile: Callable[..., Path], tmp_path: Path
) -> None:
    profile = write_profile(["softfail.test", "nodmarc.test", "dmarcnone.test"])
    junit = tmp_path / "verify.xml"
    # A real process: stdout must hold exactly one JSON document and nothing else.
    result = run_smtpconn(
        "verify",
        "--profile",
        str(profile),
        "--resolver",
        lab.resolver,
        *SKIP_TLS,
        "--json",
        "--junit",
        str(junit),
        cwd=tmp_path,
    )
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    checks = {(a["address"], c["id"]): c for a in doc["addresses"] for c in a["checks"]}
    softfail = checks[("support@softfail.test", "spf.authorizes")]
    assert softfail["status"] == "fail"
    assert "v=spf1 ip4:192.0.2.1 ip4:127.0.0.1 ~all" in softfail["fix"]
    assert checks[("support@nodmarc.test", "dmarc.record")]["status"] == "fail"
    assert checks[("support@dmarcnone.test", "dmarc.policy")]["status"] == "warn"
    root = ET.parse(junit).getroot()
    failures = {
        (case.get("classname"), case.get("name"))
        for case in root.iter("testcase")
        if case.find("failure") is not None
    }
    assert ("support@softfail.test", "spf.authorizes") in failures
    assert ("support@dmarcnone.test", "dmarc.policy") not in failures  # a warning, not --strict
    assert SECRET_VALUE not in result.output and SECRET_VALUE not in junit.read_text()


def test_strict_makes_warnings_fail(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["dmarcnone.test"])
    args = ("verify", "--profile", str(profile), "--resolver", lab.resolver, *SKIP_TLS)
    assert cli(*args).exit_code == 0
    strict = cli(*args, "--strict")
    assert strict.exit_code == 1
    assert "p=none" in strict.stdout and "fix:" in strict.stdout


def test_only_and_skip_select_checks(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["nospf.test"])
    base = ("verify", "--profile", str(profile), "--resolver", lab.resolver, "--json")
    doc = json.loads(cli(*base, "--only", "spf,dkim.strength").stdout)
    ids = [c["id"] for c in doc["addresses"][0]["checks"]]
    assert ids == ["spf.record", "spf.lookups", "spf.authorizes", "dkim.strength"]
    doc = json.loads(cli(*base, *SKIP_TLS, "--skip", "spf").stdout)
    assert not any(c["id"].startswith("spf.") for c in doc["addresses"][0]["checks"])
    bad = cli(*base, "--only", "spff")
    assert bad.exit_code == 2 and "spff" in bad.stderr and "Traceback" not in bad.output


def test_unknown_address_is_bad_usage(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["good.test"])
    result = cli(
        "verify", "nobody@good.test", "--profile", str(profile), "--resolver", lab.resolver
    )
    assert result.exit_code == 2 and "not in the profile" in result.stderr


def test_resolver_that_never_answers_gives_error_and_exit_3(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["good.test"])
    with BlackHoleResolver() as hole:
        started = time.monotonic()
        result = cli(
            "verify",
            "--profile",
            str(profile),
            "--resolver",
            hole.address,
            "--timeout",
            "0.6",
            *SKIP_TLS,
            "--json",
        )
        elapsed = time.monotonic() - started
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    statuses = {c["id"]: c["status"] for c in doc["addresses"][0]["checks"]}
    assert "fail" not in statuses.values()
    assert statuses["dns.mx"] == "error" and statuses["spf.record"] == "error"
    mx = next(c for c in doc["addresses"][0]["checks"] if c["id"] == "dns.mx")
    assert hole.address.split(":")[1] in mx["detail"] and "good.test" in mx["detail"]
    assert mx["fix"]
    assert elapsed < 15


def test_servfail_is_could_not_tell(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["good.test"])
    with ServfailResolver() as servfail:
        result = cli(
            "verify",
            "--profile",
            str(profile),
            "--resolver",
            servfail.address,
            "--timeout",
            "2",
            "--only",
            "dns,spf,dmarc",
            "--json",
        )
    assert result.exit_code == 3, result.output
    statuses = [c["status"] for c in json.loads(result.stdout)["addresses"][0]["checks"]]
    assert "fail" not in statuses and "error" in statuses


def test_deadline_stops_the_run_with_errors(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["good.test"])
    with BlackHoleResolver() as hole:
        started = time.monotonic()
        result = cli(
            "verify",
            "--profile",
            str(profile),
            "--resolver",
            hole.address,
            "--timeout",
            "30",
            "--deadline",
            "1",
            *SKIP_TLS,
            "--json",
        )
        elapsed = time.monotonic() - started
    assert result.exit_code == 3, result.output
    checks = json.loads(result.stdout)["addresses"][0]["checks"]
    assert any("deadline" in c["summary"] for c in checks)
    assert elapsed < 10


def test_table_output_shows_fix_beneath_failures(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path]
) -> None:
    profile = write_profile(["nomx.test"], forwarding=["nomx.test"])
    result = cli("verify", "--profile", str(profile), "--resolver", lab.resolver, *SKIP_TLS)
    assert result.exit_code == 1
    assert "support@nomx.test" in result.stdout and "dns.mx" in result.stdout
    assert "nomx.test. MX 10" in result.stdout
    assert "verifying" not in result.stdout  # no progress display when not a terminal
