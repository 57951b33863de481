"""status through the real CLI app, without a relay: the profile's addresses with nothing
recorded (exit 0); the status file's last error newer than the last success exits 1; a corrupt
status file is ignored, not a traceback; a missing profile exits 2."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import CliInvoker

from .test_add_address import add_bidirectional


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cr3t")


def _status_file(workdir: Path, addresses: dict) -> None:  # type: ignore[type-arg]
    spool = workdir / "spool"
    spool.mkdir(exist_ok=True)
    document = {"version": 1, "updated": time.time(), "addresses": addresses}
    (spool / "status.json").write_text(json.dumps(document))


def test_nothing_recorded_is_not_a_failure(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli).exit_code == 0
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    [item] = document["addresses"]
    assert item["address"] == "support@example.com" and item["queued"] == 0
    assert item["last_error"] is None and not item["failing"]
    assert 0 <= item["inbound_credential_age"] < 60  # add-address records when it made it
    assert document["relay"]["running"] is False
    assert "never" in cli("status").stdout


def test_an_error_newer_than_the_last_success_exits_1(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli).exit_code == 0
    now = time.time()
    error = {"time": now, "stage": "tls", "reply": "bad\x1b[2J cert", "event": "outbound.deferred"}
    _status_file(
        workdir, {"support@example.com": {"last_outbound_delivered": now - 60, "last_error": error}}
    )
    result = cli("status")
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.stdout and "tls" in result.stdout
    _status_file(
        workdir, {"support@example.com": {"last_outbound_delivered": now + 1, "last_error": error}}
    )
    assert cli("status").exit_code == 0


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 1, "addresses": 7}',
        '{"version": 1, "addresses": {"support@example.com": 3}}',
    ],
)
def test_a_damaged_status_file_is_ignored(cli: CliInvoker, workdir: Path, content: str) -> None:
    assert add_bidirectional(cli).exit_code == 0
    (workdir / "spool").mkdir()
    (workdir / "spool" / "status.json").write_text(content)
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def test_a_missing_profile_exits_2(cli: CliInvoker, workdir: Path) -> None:
    result = cli("--profile", str(workdir / "nope.toml"), "status")
    assert result.exit_code == 2, result.output


def test_token_expiry_is_an_iso_time_and_a_readable_line(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli).exit_code == 0
    expires = int(time.time()) + 3 * 3600 + 60
    _status_file(workdir, {"support@example.com": {"token_expires": expires}})
    [item] = json.loads(cli("status", "--json").stdout)["addresses"]
    assert datetime.fromisoformat(item["token_expires"]).timestamp() == expires
    assert f"OAuth token valid until {item['token_expires']} (in 3h)" in cli("status").stdout
    _status_file(workdir, {"support@example.com": {"token_expires": expires - 4 * 3600}})
    result = cli("status")
    assert result.exit_code == 0  # an expired token is replaced at the next delivery
    assert "last OAuth token expired" in result.stdout and "(59m ago)" in result.stdout
