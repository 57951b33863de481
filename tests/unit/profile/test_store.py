"""The profile file: round trips, atomic saves, concurrency and crashes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smtpconn.addresses import parse_address
from smtpconn.errors import ProfileError
from smtpconn.profile import store
from smtpconn.profile.model import Mode, Profile, SupportAddress, Workflow
from smtpconn.profile.store import load_profile, render_profile, save_profile
from tests.conftest import run_smtpconn


def _profile_with(count: int) -> Profile:
    profile = Profile()
    for i in range(count):
        address = parse_address(f"user{i}@example.com")
        profile = profile.with_address(
            SupportAddress(address=address, mode=Mode.OUTBOUND_ONLY, workflow=Workflow.FORWARDING)
        )
    return profile


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    profile = _profile_with(3)
    save_profile(path, profile)
    assert load_profile(path).profile == profile
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_failed_save_leaves_the_old_file_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.toml"
    save_profile(path, _profile_with(1))
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(ProfileError, match="not changed"):
        save_profile(path, _profile_with(5))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.toml.lock", "p.toml"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["p.toml"]


def test_twenty_concurrent_add_address_processes_keep_all_twenty(tmp_path: Path) -> None:
    def add(i: int) -> int:
        result = run_smtpconn(
            "add-address", f"support{i}@example{i}.com", "--workflow", "forwarding", cwd=tmp_path
        )
        assert result.exit_code == 0, result.stderr
        return result.exit_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(add, range(20))) == [0] * 20
    data = tomllib.loads((tmp_path / "smtpconn.toml").read_text())
    assert sorted(a["address"] for a in data["addresses"]) == sorted(
        f"support{i}@example{i}.com" for i in range(20)
    )


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from smtpconn.addresses import parse_address
    from smtpconn.profile.model import Mode, Profile, SupportAddress, Workflow
    from smtpconn.profile.store import save_profile

    path = Path(sys.argv[1])
    profile = Profile()
    # Big enough that a write takes a while: a kill is likely to land mid-write.
    for i in range(400):
        address = parse_address(f"user{i}@example.com")
        profile = profile.with_address(
            SupportAddress(address=address, mode=Mode.OUTBOUND_ONLY, workflow=Workflow.FORWARDING)
        )
    generation = 0
    print("ready", flush=True)
    while True:
        generation += 1
        profile = profile.with_address(
            SupportAddress(
                address=parse_address(f"gen{generation}@example.com"),
                mode=Mode.OUTBOUND_ONLY,
                workflow=Workflow.FORWARDING,
            )
        )
        save_profile(path, profile)
    """
)


def test_a_process_killed_mid_save_leaves_a_whole_file(tmp_path: Path) -> None:
    """SIGKILL a writer at random moments: the file is always a complete, valid profile."""
    path = tmp_path / "p.toml"
    save_profile(path, _profile_with(1))
    rng = random.Random(7)
    generations_seen = set()
    for _ in range(15):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.25))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = load_profile(path)  # raises if the file were partial or invalid
        addresses = {e.address.ascii for e in loaded.profile.addresses}
        generations = {a for a in addresses if a.startswith("gen")}
        # Generations are added one per save: a whole file holds gen1..genN with no gap.
        assert generations == {f"gen{i}@example.com" for i in range(1, len(generations) + 1)}
        generations_seen.add(len(generations))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # A kill between mkstemp and rename may leave a temporary file; never the profile itself.
    assert all(name.startswith(".p.toml.") for name in leftovers)
    assert len(generations_seen) > 1, "the kills should land at different points"


def test_render_has_header_and_no_secrets() -> None:
    text = render_profile(_profile_with(1))
    assert text.startswith("# smtpconn connector profile")
    assert tomllib.loads(text)["version"] == 1


def test_pipe_command_string_is_split_like_a_shell_without_one(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'version = 1\n[relay.sink]\nkind = "pipe"\n'
        "command = \"/usr/bin/rt-mailgate --queue 'First Line' --action correspond\"\n"
    )
    sink = load_profile(path).profile.relay.sink  # type: ignore[union-attr]
    assert sink.command == [
        "/usr/bin/rt-mailgate",
        "--queue",
        "First Line",
        "--action",
        "correspond",
    ]
    path.write_text('version = 1\n[relay.sink]\nkind = "pipe"\ncommand = "unclosed \'quote"\n')
    with pytest.raises(ProfileError, match="cannot be split"):
        load_profile(path)
