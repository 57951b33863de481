"""The TLS/AUTH family through ``smtpconn verify`` (the runner registers it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.lab import Lab
from tests.conftest import CliInvoker
from tests.integration.send_test.conftest import lab_args, write_profile

__all__ = ["lab_args", "write_profile"]  # fixtures shared with send-test


def test_good_server_passes_and_no_password_in_output(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile()
    result = cli(
        "verify", "--only", "tls,auth", "--json", "-v", "--profile", str(profile), *lab_args
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {c["id"]: c["status"] for c in report["addresses"][0]["checks"]}
    assert checks["auth.login"] == "pass" and checks["tls.certificate"] == "pass"
    assert lab.user.password not in result.output


def test_closed_port_exits_3(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    from lab.proc import free_ports

    profile = write_profile()
    profile.write_text(
        profile.read_text().replace(
            f"port = {lab.ports['submission']}", f"port = {free_ports(1)[0]}"
        )
    )
    result = cli("verify", "--only", "tls,auth", "--json", "--profile", str(profile), *lab_args)
    assert result.exit_code == 3, result.output
    checks = {c["id"]: c["status"] for c in json.loads(result.stdout)["addresses"][0]["checks"]}
    assert checks["tls.connect"] == "error"


@pytest.mark.parametrize(
    ("port", "check", "status"),
    [("no_starttls", "tls.starttls", "fail"), ("expired", "tls.certificate", "fail")],
)
def test_bad_ports_exit_1(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str],
    port: str, check: str, status: str,
) -> None:  # fmt: skip
    profile = write_profile(port)
    result = cli("verify", "--only", "tls,auth", "--json", "--profile", str(profile), *lab_args)
    assert result.exit_code == 1, result.output
    checks = {c["id"]: c["status"] for c in json.loads(result.stdout)["addresses"][0]["checks"]}
    assert checks[check] == status
    assert lab.user.password not in result.output


def test_insecure_flag_is_loud_and_reported_in_json(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile("untrusted")
    strict = cli("verify", "--only", "tls,auth", "--json", "--profile", str(profile), *lab_args)
    assert strict.exit_code == 1, strict.output
    result = cli(
        "verify", "--only", "tls,auth", "--insecure", "--json", "--profile", str(profile), *lab_args
    )
    report = json.loads(result.stdout)
    assert report["insecure"] is True
    assert "INSECURE" in result.stderr
    checks = {c["id"]: c for c in report["addresses"][0]["checks"]}
    assert checks["auth.login"]["status"] == "pass"
    assert checks["tls.certificate"]["status"] == "warn"
    assert lab.user.password not in result.output
