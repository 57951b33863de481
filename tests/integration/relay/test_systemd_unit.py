"""The example systemd unit: systemd-analyze accepts it (when systemd is installed), it reloads
with SIGHUP and keeps the hardening docs/relay.md describes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[3] / "examples" / "relay" / "smtpconn-relay.service"


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_reloads_and_is_hardened() -> None:
    settings = _settings()
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["User"] == ["smtpconn"] and settings["NoNewPrivileges"] == ["true"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == ["/var/lib/smtpconn"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify checks that the programs exist: point the unit at this smtpconn.
    smtpconn = Path(sys.executable).with_name("smtpconn")
    if not smtpconn.exists():
        smtpconn = Path(shutil.which("smtpconn") or "/bin/true")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/smtpconn", str(smtpconn)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Unknown" not in result.stderr and "Ignoring" not in result.stderr, result.stderr
