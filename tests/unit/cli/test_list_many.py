"""``list`` of a profile too large for a laid-out table: one line per address, none shortened."""

from __future__ import annotations

from pathlib import Path

from smtpconn.addresses import parse_address
from smtpconn.profile.model import Mode, SupportAddress, Workflow
from smtpconn.profile.textedit import tables_text
from tests.conftest import run_smtpconn


def test_list_of_many_addresses_prints_every_address_whole_on_its_own_line(
    tmp_path: Path,
) -> None:
    long_local = "a-very-long-department-name-that-a-table-would-fold"
    entries = tuple(
        SupportAddress(
            parse_address(f"{long_local}{i}@example.com"), Mode.OUTBOUND_ONLY, Workflow.FORWARDING
        )
        for i in range(250)
    )
    profile = tmp_path / "smtpconn.toml"
    profile.write_text("version = 1\n\n" + tables_text(entries))
    profile.chmod(0o600)
    result = run_smtpconn(
        "list", "--profile", str(profile), cwd=tmp_path, env={"COLUMNS": "40", "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Support addresses in {profile} (250)"
    for i in range(250):
        [line] = [x for x in lines if x.startswith(f"{long_local}{i}@example.com ")]
        assert "outbound-only" in line and "forwarding" in line
