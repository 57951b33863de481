"""scripts/lab up / status / down: the lab for people comes up in under 30 s, its settings work,
and down stops exactly what up started."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from lab.dns import dig
from lab.lab import Lab, LabState
from lab.proc import port_open, session_members
from lab.swaks import send

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "lab"


def run_lab(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMTPCONN_LAB_DIR": str(state_dir)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_up_status_down(lab: Lab, tmp_path: Path) -> None:
    # Depends on the session lab only for the skip/fail rule on missing programs; this test
    # starts a second, independent lab through the command.
    state_dir = tmp_path / "state"
    t0 = time.monotonic()
    up = run_lab(state_dir, "up")
    elapsed = time.monotonic() - t0
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert elapsed < 30, f"lab up took {elapsed:.1f}s"
        st = LabState.load(state_dir / "state.json")
        for needle in (st.resolver, st.ca_file, str(st.ports["submission"]), st.user):
            assert needle in up.stdout
        # The env file is valid shell and carries the settings smtpconn reads.
        env_text = (state_dir / "env").read_text()
        env = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in env_text.splitlines()
            if line.startswith("export ")
        )
        assert env["SMTPCONN_RESOLVER"] == st.resolver
        assert env["SMTPCONN_CA_FILE"] == st.ca_file and Path(st.ca_file).is_file()
        # "up" again is a no-op that reports the running lab.
        again = run_lab(state_dir, "up")
        assert again.returncode == 0 and "already running" in again.stdout
        assert LabState.load(state_dir / "state.json").pids == st.pids
        assert run_lab(state_dir, "status").returncode == 0
        # The servers outlived the command and work.
        host, port = st.resolver.split(":")
        assert dig(host, int(port), "MX", "good.test").split() == ["10", "mail.good.test."]
        res = send(
            st.ports["submission"], ca_file=st.ca_file, auth=(st.user, st.password), to=st.user
        )
        assert res.ok, res.transcript
    finally:
        down = run_lab(state_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name, pid in st.pids.items():
        assert not session_members(pid), f"{name} left running"
    for p in [st.dns_port, st.sasl_port, *st.ports.values()]:
        assert not port_open("127.0.0.1", p, 0.2), f"port {p} still listening"
    assert not Path(st.root).exists()
    assert not (state_dir / "state.json").exists()
    assert run_lab(state_dir, "status").returncode == 1
