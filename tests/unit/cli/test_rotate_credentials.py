"""rotate-credentials through the real CLI app: a new password shown once (or written to a
private file), both hashes in the profile, list showing the pending rotation; bad input exits 2
and leaves the profile byte-identical."""

from __future__ import annotations

import json
import stat
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smtpconn.profile.secrets import verify_password
from tests.conftest import CliInvoker

from .test_add_address import add_bidirectional


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cr3t")


@pytest.fixture
def old_password(cli: CliInvoker) -> str:
    result = add_bidirectional(cli, "support@example.com", "--json")
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["inbound_password"])


def _inbound(workdir: Path) -> dict:  # type: ignore[type-arg]
    return dict(tomllib.loads((workdir / "smtpconn.toml").read_text())["addresses"][0]["inbound"])


def test_rotation_keeps_both_hashes_and_list_shows_it(
    cli: CliInvoker, workdir: Path, old_password: str
) -> None:
    before = datetime.now(UTC)
    result = cli("rotate-credentials", "support@example.com", "--grace", "2d", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["addresses"] == ["support@example.com"] and document["login"] == "inbound"
    inbound = _inbound(workdir)
    assert verify_password(document["password"], inbound["password_hash"])
    assert verify_password(old_password, inbound["previous_password_hash"])
    until = inbound["previous_valid_until"]
    assert before.replace(microsecond=0) <= inbound["issued_at"] <= datetime.now(UTC)
    assert before + timedelta(days=2) <= until <= datetime.now(UTC) + timedelta(days=2, seconds=2)
    assert document["password"] not in (workdir / "smtpconn.toml").read_text()
    listed = json.loads(cli("list", "--json").stdout)["addresses"][0]["inbound"]
    assert listed == {"username": "support@example.com", "previous_valid_until": until.isoformat()}
    assert "rotating" in cli("list").stdout
    assert cli("profile", "validate").exit_code == 0


def test_password_file_and_grace_zero(cli: CliInvoker, workdir: Path, old_password: str) -> None:
    secret = workdir / "new.pw"
    result = cli(
        "rotate-credentials",
        "support@example.com",
        "--grace",
        "0",
        "--inbound-password-file",
        str(secret),
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert password not in result.output and "revoked now" in result.output
    inbound = _inbound(workdir)
    assert verify_password(password, inbound["password_hash"])
    assert "previous_password_hash" not in inbound


def test_submission_rotation(cli: CliInvoker, workdir: Path, old_password: str) -> None:
    assert cli("submission-credentials", "--username", "helpdesk").exit_code == 0
    result = cli("rotate-credentials", "--submission", "--grace", "1h", "--json")
    assert result.exit_code == 0, result.output
    relay = tomllib.loads((workdir / "smtpconn.toml").read_text())["relay"]
    assert verify_password(json.loads(result.stdout)["password"], relay["submission_password_hash"])
    assert relay["submission_previous_valid_until"] > datetime.now(UTC)


@pytest.mark.parametrize(
    "args",
    [
        ("rotate-credentials", "support@example.com", "--grace", "seven days"),
        ("rotate-credentials", "nobody@example.com"),
        ("rotate-credentials",),
        ("rotate-credentials", "support@example.com", "--submission"),
        ("rotate-credentials", "--submission"),  # no submission login set
        ("rotate-credentials", "support@example.com", "--inbound-password-file", "/proc/nope/pw"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    cli: CliInvoker, workdir: Path, old_password: str, args: tuple[str, ...]
) -> None:
    profile = workdir / "smtpconn.toml"
    raw = profile.read_bytes()
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert profile.read_bytes() == raw
