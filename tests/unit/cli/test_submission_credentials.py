"""submission-credentials through the real CLI app: the password is generated, shown once (or
written to a private file) and only its hash reaches the profile; bad input changes nothing."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from smtpconn.profile.secrets import verify_password
from tests.conftest import CliInvoker

from .test_add_address import add_bidirectional

PROFILE_COMMENT = "# hand-written note that must survive\n"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cr3t")


@pytest.fixture
def profile_file(cli: CliInvoker, workdir: Path) -> Path:
    assert add_bidirectional(cli).exit_code == 0
    path = workdir / "smtpconn.toml"
    path.write_text(PROFILE_COMMENT + path.read_text())
    return path


def relay_table(path: Path) -> dict:  # type: ignore[type-arg]
    return dict(tomllib.loads(path.read_text()).get("relay", {}))


def test_sets_a_generated_password_and_keeps_only_its_hash(
    cli: CliInvoker, profile_file: Path
) -> None:
    result = cli("submission-credentials", "--username", "helpdesk", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    password = document["submission_password"]
    assert document["action"] == "set" and document["submission_username"] == "helpdesk"
    assert len(password) >= 32
    text = profile_file.read_text()
    assert password not in text
    assert PROFILE_COMMENT in text
    assert stat.S_IMODE(profile_file.stat().st_mode) == 0o600
    relay = relay_table(profile_file)
    assert relay["submission_username"] == "helpdesk"
    assert verify_password(password, relay["submission_password_hash"])
    assert cli("profile", "validate").exit_code == 0


def test_text_output_shows_the_password_once(cli: CliInvoker, profile_file: Path) -> None:
    result = cli("submission-credentials", "--username", "helpdesk")
    assert result.exit_code == 0, result.output
    relay = relay_table(profile_file)
    shown = [
        w for w in result.stdout.split() if verify_password(w, relay["submission_password_hash"])
    ]
    assert len(shown) == 1
    assert "Shown once" in result.stdout


def test_running_again_rotates_the_password(cli: CliInvoker, profile_file: Path) -> None:
    first = json.loads(cli("submission-credentials", "--username", "a", "--json").stdout)
    second = json.loads(cli("submission-credentials", "--username", "b", "--json").stdout)
    assert second["previous_username"] == "a"
    relay = relay_table(profile_file)
    assert relay["submission_username"] == "b"
    assert verify_password(second["submission_password"], relay["submission_password_hash"])
    assert not verify_password(first["submission_password"], relay["submission_password_hash"])


def test_password_file_is_private_and_the_password_is_not_shown(
    cli: CliInvoker, profile_file: Path, workdir: Path
) -> None:
    password_file = workdir / "submission.pw"
    result = cli(
        "submission-credentials", "--username", "helpdesk", "--password-file", str(password_file),
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password not in result.output
    document = json.loads(result.stdout)
    assert "submission_password" not in document
    assert document["submission_password_file"] == str(password_file)
    assert verify_password(password, relay_table(profile_file)["submission_password_hash"])


def test_remove_clears_the_login(cli: CliInvoker, profile_file: Path) -> None:
    assert cli("submission-credentials", "--username", "helpdesk").exit_code == 0
    result = cli("submission-credentials", "--remove", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["action"] == "removed" and document["previous_username"] == "helpdesk"
    relay = relay_table(profile_file)
    assert "submission_username" not in relay and "submission_password_hash" not in relay
    before = profile_file.read_bytes()
    again = cli("submission-credentials", "--remove")
    assert again.exit_code == 0 and "nothing was changed" in again.stdout
    assert profile_file.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--username is required"),
        (("--username", "has space"), "--username must be"),
        (("--username", ""), "--username must be"),
        (("--username", "x", "--remove"), "--remove cannot be combined"),
        (("--remove", "--password-file", "pw"), "--remove cannot be combined"),
        (("--username", "x", "--password-file", "/nonexistent/dir/pw"), "cannot write"),
    ],
)
def test_bad_input_exits_2_and_leaves_the_profile_byte_identical(
    cli: CliInvoker, profile_file: Path, args: tuple[str, ...], message: str
) -> None:
    assert cli("submission-credentials", "--username", "helpdesk").exit_code == 0
    before = profile_file.read_bytes()
    result = cli("submission-credentials", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert profile_file.read_bytes() == before


def test_no_profile_is_an_error(cli: CliInvoker, workdir: Path) -> None:
    result = cli("submission-credentials", "--username", "helpdesk")
    assert result.exit_code == 2, result.output
    assert "no profile" in result.stderr
    assert not (workdir / "smtpconn.toml").exists()
