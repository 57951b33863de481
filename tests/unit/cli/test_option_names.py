"""Library errors name the value ("the subject", "the profile"); the command line names the
option or variable that carries it, so a user still learns which flag to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smtpconn.errors import UsageError
from smtpconn.profile.store import load_profile
from smtpconn.sendtest.testmessage import check_subject
from tests.conftest import CliInvoker


def test_the_library_names_the_value_not_a_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as missing:
        load_profile(tmp_path / "absent.toml")
    assert missing.value.input == "profile"
    assert "--" not in str(missing.value)
    with pytest.raises(UsageError) as subject:
        check_subject("two\nlines")
    assert subject.value.input == "subject"
    assert "--" not in str(subject.value)


def test_the_cli_adds_the_option_that_gives_the_profile(cli: CliInvoker, workdir: Path) -> None:
    result = cli("--profile", str(workdir / "absent.toml"), "list")
    assert result.exit_code == 2
    assert "no profile at" in result.stderr
    assert "--profile PATH or SMTPCONN_PROFILE" in result.stderr


def test_json_errors_carry_the_option_too(cli: CliInvoker, workdir: Path) -> None:
    result = cli("--json", "--profile", str(workdir / "absent.toml"), "list")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["fix"].endswith("(--profile PATH or SMTPCONN_PROFILE)")
