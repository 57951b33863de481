"""remove-address with mail for the address in the spool: refused (exit 2, profile
byte-identical, the count and the commands); --force removes and lists what was left; --drain
waits until the mail has left, and stops when only held mail remains."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from smtpconn.cli import remove_address
from smtpconn.relay.spool import Envelope, RetryState, Spool
from tests.conftest import CliInvoker

from .test_add_address import add_bidirectional


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cr3t")
    monkeypatch.setattr(remove_address, "POLL", 0.05)


def _queue(workdir: Path, address: str, *, held: bool = False, direction: str = "inbound") -> str:
    spool = Spool(workdir / "spool")
    spool.create()
    envelope = Envelope(
        direction, "a@b.test", (address,), time.time(), {"support_address": address}
    )
    entry_id = spool.put(envelope, b"Subject: x\r\n\r\nx\r\n")
    if held:
        entry = spool.find(entry_id)
        assert entry is not None
        spool.save_state(entry, RetryState(attempts=1, held=True, last_error="sink said no"))
    return entry_id


@pytest.fixture
def profile(cli: CliInvoker, workdir: Path) -> Path:
    assert add_bidirectional(cli, "support@example.com").exit_code == 0
    assert add_bidirectional(cli, "other@example.com").exit_code == 0
    return workdir / "smtpconn.toml"


def test_refused_while_mail_is_queued(cli: CliInvoker, workdir: Path, profile: Path) -> None:
    _queue(workdir, "support@example.com")
    _queue(workdir, "support@example.com", held=True, direction="outbound")
    _queue(workdir, "other@example.com")  # not this address's
    raw = profile.read_bytes()
    result = cli("remove-address", "support@example.com")
    assert result.exit_code == 2, result.output
    assert "2 message(s) (1 held)" in result.stderr
    assert "smtpconn queue retry" in result.stderr and "smtpconn queue delete" in result.stderr
    assert profile.read_bytes() == raw
    assert cli("remove-address", "support@example.com", "--drain", "--force").exit_code == 2
    assert profile.read_bytes() == raw


def test_force_removes_and_says_what_was_left(
    cli: CliInvoker, workdir: Path, profile: Path
) -> None:
    entry_id = _queue(workdir, "support@example.com")
    result = cli("remove-address", "support@example.com", "--force", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["left_in_spool"] == [entry_id]
    assert "support@example.com" not in profile.read_text()
    assert (workdir / "spool" / "inbound" / f"{entry_id}.msg").exists()  # left, not deleted


def test_drain_waits_for_the_mail_to_leave(cli: CliInvoker, workdir: Path, profile: Path) -> None:
    entry_id = _queue(workdir, "support@example.com")
    spool = Spool(workdir / "spool")

    def deliver_later() -> None:
        time.sleep(0.4)
        entry = spool.find(entry_id)
        assert entry is not None
        spool.remove(entry)

    worker = threading.Thread(target=deliver_later)
    started = time.monotonic()
    worker.start()
    result = cli("remove-address", "support@example.com", "--drain")
    worker.join()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.4
    assert "support@example.com" not in profile.read_text()


def test_drain_stops_when_only_held_mail_is_left(
    cli: CliInvoker, workdir: Path, profile: Path
) -> None:
    _queue(workdir, "support@example.com", held=True)
    raw = profile.read_bytes()
    result = cli("remove-address", "support@example.com", "--drain")
    assert result.exit_code == 2, result.output
    assert "only held messages" in result.stderr
    assert profile.read_bytes() == raw


def test_no_spool_and_no_mail_removes_at_once(cli: CliInvoker, profile: Path) -> None:
    result = cli("remove-address", "support@example.com")
    assert result.exit_code == 0, result.output
    assert "support@example.com" not in profile.read_text()
