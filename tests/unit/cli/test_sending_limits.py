"""Per-server sending limits in the profile: ``add-address`` fills the provider's published
limits, explicit options win, bad values change nothing, and export/import carry them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from smtpconn.profile.model import SendingLimits, lane_limits
from tests.conftest import CliInvoker


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "not-written-anywhere")


def _add(cli: CliInvoker, address: str, *extra: str) -> str:
    result = cli(
        "add-address",
        address,
        "--mode",
        "outbound-only",
        "--username",
        "helpdesk@example.com",
        "--secret",
        "env:SMTP_PASSWORD",
        *extra,
    )
    return str(result.exit_code) + result.output


def _limits(workdir: Path, index: int = 0) -> dict[str, int] | None:
    data = tomllib.loads((workdir / "smtpconn.toml").read_text())
    limits: dict[str, int] | None = data["addresses"][index]["outbound"].get("limits")
    return limits


def test_microsoft365_preset_with_an_explicit_value_winning(cli: CliInvoker, workdir: Path) -> None:
    out = _add(cli, "a@example.com", "--provider", "microsoft365", "--messages-per-minute", "20")
    assert out.startswith("0"), out
    assert _limits(workdir) == {
        "max_connections": 3,
        "messages_per_minute": 20,
        "recipients_per_day": 10000,
    }


def test_google_detected_from_the_server_name(cli: CliInvoker, workdir: Path) -> None:
    assert _add(cli, "a@example.com", "--server", "smtp.gmail.com").startswith("0")
    assert _limits(workdir) == {"recipients_per_message": 100, "recipients_per_day": 10000}


def test_no_provider_no_limits_unless_given(cli: CliInvoker, workdir: Path) -> None:
    assert _add(cli, "a@example.com", "--server", "mail.example.com").startswith("0")
    assert _limits(workdir) is None
    out = _add(
        cli, "b@example.com", "--server", "mail.example.com", "--recipients-per-message", "50"
    )
    assert out.startswith("0"), out
    assert _limits(workdir, 1) == {"recipients_per_message": 50}


def test_a_non_positive_limit_exits_2_and_changes_nothing(cli: CliInvoker, workdir: Path) -> None:
    assert _add(cli, "a@example.com", "--server", "mail.example.com").startswith("0")
    before = (workdir / "smtpconn.toml").read_bytes()
    out = _add(cli, "b@example.com", "--server", "mail.example.com", "--max-connections", "0")
    assert out.startswith("2") and "--max-connections" in out and "Traceback" not in out
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_a_bad_limit_key_in_the_profile_is_named(cli: CliInvoker, workdir: Path) -> None:
    assert _add(cli, "a@example.com", "--server", "mail.example.com").startswith("0")
    path = workdir / "smtpconn.toml"
    path.write_text(
        path.read_text() + "\n[addresses.outbound.limits]\nmax_conections = 2\n"
        "recipients_per_day = -1\n"
    )
    result = cli("profile", "validate")
    assert result.exit_code == 2, result.output
    assert "addresses[0].outbound.limits.max_conections" in result.output
    assert "addresses[0].outbound.limits.recipients_per_day" in result.output


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_import_carry_the_limits(cli: CliInvoker, workdir: Path, fmt: str) -> None:
    assert _add(cli, "a@example.com", "--provider", "google").startswith("0")
    exported = cli("export", "--format", fmt)
    assert exported.exit_code == 0, exported.output
    assert "recipients_per_message" in exported.stdout
    dump = workdir / f"dump.{fmt}"
    dump.write_text(exported.stdout)
    other = workdir / "other.toml"
    result = cli("--profile", str(other), "import", str(dump))
    assert result.exit_code == 0, result.output
    data = tomllib.loads(other.read_text())
    assert data["addresses"][0]["outbound"]["limits"] == {
        "recipients_per_message": 100,
        "recipients_per_day": 10000,
    }


def test_a_shared_server_takes_the_strictest_value_per_key() -> None:
    merged = lane_limits(
        [
            SendingLimits(max_connections=3, recipients_per_day=10000),
            SendingLimits(max_connections=5, recipients_per_message=100),
            SendingLimits(),
        ]
    )
    assert merged == SendingLimits(
        max_connections=3, recipients_per_message=100, recipients_per_day=10000
    )
