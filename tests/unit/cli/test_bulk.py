"""``smtpconn import`` / ``export`` through the real CLI app: one transaction, bad rows named by
line and field with nothing written, passwords only in a 0600 file, and export → import round
trips."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from smtpconn.profile.secrets import verify_password
from tests.conftest import CliInvoker

SECRET_VALUE = "s3cr3t-value-that-must-never-be-written"
HEADER = "address,mode,server,username,secret,inbound_username,readd\n"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", SECRET_VALUE)


def _write(workdir: Path, name: str, text: str) -> Path:
    path = workdir / name
    path.write_text(text)
    return path


def _seed(cli: CliInvoker) -> bytes:
    result = cli(
        "add-address",
        "first@example.com",
        "--mode",
        "outbound-only",
        "--server",
        "mail.example.com",
        "--username",
        "helpdesk",
        "--secret",
        "env:SMTP_PASSWORD",
    )
    assert result.exit_code == 0, result.output
    profile = Path("smtpconn.toml")
    profile.write_text("# kept by the administrator\n" + profile.read_text())
    return profile.read_bytes()


def test_csv_import_adds_every_row_and_writes_passwords_only_to_a_0600_file(
    cli: CliInvoker, workdir: Path
) -> None:
    _seed(cli)
    rows = "".join(
        f"user{i}@example.com,{'bidirectional' if i % 2 else 'outbound-only'},"
        f"mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n"
        for i in range(6)
    )
    source = _write(workdir, "many.csv", HEADER + rows)
    passwords = workdir / "passwords.csv"
    result = cli("import", str(source), "--inbound-password-file", str(passwords))
    assert result.exit_code == 0, result.output
    text = (workdir / "smtpconn.toml").read_text()
    assert text.startswith("# kept by the administrator\n")
    data = tomllib.loads(text)
    assert [a["address"] for a in data["addresses"]] == ["first@example.com"] + [
        f"user{i}@example.com" for i in range(6)
    ]
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    lines = passwords.read_text().splitlines()
    assert lines[0] == "address,inbound_username,inbound_password"
    hashes = {
        a["address"]: a["inbound"]["password_hash"] for a in data["addresses"][1:] if "inbound" in a
    }
    assert len(lines) == 1 + 3 == 1 + len(hashes)
    for line in lines[1:]:
        address, _, password = line.split(",")
        assert verify_password(password, hashes[address])
        assert password not in result.output
    assert SECRET_VALUE not in text + result.output


def test_bidirectional_rows_without_a_password_file_change_nothing(
    cli: CliInvoker, workdir: Path
) -> None:
    before = _seed(cli)
    source = _write(
        workdir,
        "one.csv",
        HEADER + "new@example.com,bidirectional,mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n",
    )
    result = cli("import", str(source))
    assert result.exit_code == 2
    assert "--inbound-password-file" in result.output
    assert (workdir / "smtpconn.toml").read_bytes() == before


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            "ok@example.com,outbound-only,mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n"
            "bad@example.com,sideways,mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n",
            ["many.csv:3", "mode"],
        ),
        ("ok@example.com,outbound-only,,helpdesk,env:SMTP_PASSWORD,,\n", ["many.csv:2", "server"]),
        (
            "ok@example.com,outbound-only,mail.example.com,helpdesk,hunter2,,\n",
            ["many.csv:2", "secret"],
        ),
        (
            "first@example.com,outbound-only,mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n",
            ["many.csv:2", "readd"],
        ),
        (
            "ok@example.com,outbound-only,mail.example.com,helpdesk,env:SMTP_PASSWORD,,maybe\n",
            ["many.csv:2", "readd"],
        ),
        (
            "ok@example.com,outbound-only,mail.example.com,helpdesk,env:SMTP_PASSWORD,,,extra\n",
            ["many.csv:2"],
        ),
    ],
)
def test_a_bad_row_exits_2_naming_line_and_field_and_writes_nothing(
    cli: CliInvoker, workdir: Path, rows: str, expected: list[str]
) -> None:
    before = _seed(cli)
    source = _write(workdir, "many.csv", HEADER + rows)
    result = cli("import", str(source))
    assert result.exit_code == 2, result.output
    for part in expected:
        assert part in result.output
    assert "Traceback" not in result.output
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_an_unknown_column_or_bad_json_line_is_named(cli: CliInvoker, workdir: Path) -> None:
    before = _seed(cli)
    source = _write(workdir, "cols.csv", "address,colour\nx@example.com,red\n")
    result = cli("import", str(source))
    assert result.exit_code == 2 and "cols.csv:2" in result.output and "colour" in result.output
    source = _write(
        workdir, "rows.jsonl", '{"address": "a@example.com", "workflow": "forwarding"}\n{oops\n'
    )
    result = cli("import", str(source))
    assert result.exit_code == 2 and "rows.jsonl:2" in result.output
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_readd_column_replaces_an_existing_address(cli: CliInvoker, workdir: Path) -> None:
    _seed(cli)
    source = _write(
        workdir,
        "readd.jsonl",
        json.dumps({"address": "first@example.com", "workflow": "forwarding", "readd": True})
        + "\n",
    )
    result = cli("import", str(source))
    assert result.exit_code == 0, result.output
    [entry] = tomllib.loads((workdir / "smtpconn.toml").read_text())["addresses"]
    assert entry == {
        "address": "first@example.com",
        "mode": "outbound-only",
        "workflow": "forwarding",
    }


def test_dry_run_prints_the_diff_without_hashes_and_writes_nothing(
    cli: CliInvoker, workdir: Path
) -> None:
    before = _seed(cli)
    source = _write(
        workdir,
        "one.csv",
        HEADER + "new@example.com,bidirectional,mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n",
    )
    passwords = workdir / "pw.csv"
    result = cli("import", str(source), "--dry-run", "--inbound-password-file", str(passwords))
    assert result.exit_code == 0, result.output
    assert '+address = "new@example.com"' in result.output
    assert "<new scrypt hash>" in result.output and "scrypt$" not in result.output
    assert (workdir / "smtpconn.toml").read_bytes() == before
    assert not passwords.exists()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_recreates_the_same_addresses(
    cli: CliInvoker, workdir: Path, fmt: str
) -> None:
    _seed(cli)
    rows = (
        "b@example.com,bidirectional,[2001:db8::1]:465,helpdesk,env:SMTP_PASSWORD,in-b,\n"
        "c@example.com,outbound-only,mail.example.com:2525,helpdesk,env:SMTP_PASSWORD,,\n"
    )
    source = _write(workdir, "seed.csv", HEADER + rows)
    assert cli("import", str(source), "--inbound-password-file", "pw1").exit_code == 0
    exported = cli("export", "--format", fmt)
    assert exported.exit_code == 0, exported.output
    assert "scrypt$" not in exported.stdout and SECRET_VALUE not in exported.stdout
    dump = workdir / f"dump.{fmt}"
    dump.write_text(exported.stdout)
    other = workdir / "other.toml"
    result = cli("--profile", str(other), "import", str(dump), "--inbound-password-file", "pw2")
    assert result.exit_code == 0, result.output
    again = cli("--profile", str(other), "export", "--format", fmt)
    assert again.stdout == exported.stdout


def test_a_warning_shared_by_many_rows_is_printed_once(
    cli: CliInvoker, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTP_PASSWORD")
    rows = "".join(
        f"u{i}@example.com,outbound-only,mail.example.com,helpdesk,env:SMTP_PASSWORD,,\n"
        for i in range(40)
    )
    result = cli("import", str(_write(workdir, "many.csv", HEADER + rows)))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "SMTP_PASSWORD" in line]
    assert len(warnings) == 1
    assert "lines 2, 3, 4, 5, 6 and 35 more" in warnings[0]
