"""Bad input: a clear one-line message, exit 2, no traceback, and the profile byte-identical."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CliInvoker

GOOD = {
    "address": "support@example.com",
    "--mode": "outbound-only",
    "--server": "mail.example.com",
    "--username": "helpdesk",
    "--secret": "env:SMTP_PASSWORD",
}


def _args(**overrides: str) -> list[str]:
    values = {
        **GOOD,
        **{k.replace("_", "-") if k.startswith("--") else k: v for k, v in overrides.items()},
    }
    args = ["add-address", values.pop("address")]
    for option, value in values.items():
        args += [option, value]
    return args


@pytest.fixture
def seeded(cli: CliInvoker, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A profile with one address in it; returns its bytes."""
    monkeypatch.setenv("SMTP_PASSWORD", "x")
    assert cli(*_args(address="existing@example.com")).exit_code == 0
    return (workdir / "smtpconn.toml").read_bytes()


def assert_refused(result_output: str, exit_code: int, workdir: Path, before: bytes) -> None:
    assert exit_code == 2, result_output
    assert "Traceback" not in result_output
    # `profile validate` lists findings (✗ …); every other command says "error:".
    assert "error:" in result_output or "✗" in result_output
    assert (workdir / "smtpconn.toml").read_bytes() == before


BAD_CASES = {
    "header injection in address": {"address": "support@example.com\r\nBcc: victim@example.org"},
    "LF in address": {"address": "sup\nport@example.com"},
    "empty local part": {"address": "@example.com"},
    "no at sign": {"address": "support.example.com"},
    "two at signs": {"address": "a@b@example.com"},
    "overlong local part": {"address": "a" * 65 + "@example.com"},
    "overlong domain label": {"address": "a@" + "b" * 64 + ".com"},
    "overlong domain": {"address": "a@" + ".".join(["abcdefghi"] * 26) + ".com"},
    "display name": {"address": "Support <support@example.com>"},
    "single-label domain": {"address": "support@localhost"},
    "bad host": {"--server": "mail_server!.example.com"},
    "host with CRLF": {"--server": "mail.example.com\r\nQUIT"},
    "port zero": {"--server": "mail.example.com:0"},
    "port too big": {"--server": "mail.example.com:65536"},
    "port not a number": {"--server": "mail.example.com:smtp"},
    "unknown mode": {"--mode": "sideways"},
    "unknown security": {"--security": "ssl3"},
    "unknown auth": {"--auth": "cram-md5"},
    "literal secret": {"--secret": "hunter2"},
    "bad env name": {"--secret": "env:1BAD NAME"},
    "missing secret file": {"--secret": "file:/nonexistent/secret"},
    "unknown workflow": {"--workflow": "magic"},
}


@pytest.mark.parametrize("overrides", BAD_CASES.values(), ids=list(BAD_CASES))
def test_bad_input_is_refused_and_changes_nothing(
    cli: CliInvoker, workdir: Path, seeded: bytes, overrides: dict[str, str]
) -> None:
    result = cli(*_args(**overrides))
    assert_refused(result.output, result.exit_code, workdir, seeded)


def test_literal_secret_is_never_echoed(cli: CliInvoker, workdir: Path, seeded: bytes) -> None:
    result = cli(*_args(**{"--secret": "Tr0ub4dor&3-literal"}))
    assert_refused(result.output, result.exit_code, workdir, seeded)
    assert "Tr0ub4dor" not in result.output


def test_missing_server_options_are_named(cli: CliInvoker, workdir: Path, seeded: bytes) -> None:
    result = cli("add-address", "new@example.com", "--mode", "bidirectional")
    assert_refused(result.output, result.exit_code, workdir, seeded)
    assert "--server" in result.stderr and "--username" in result.stderr


def test_invalid_toml_is_reported_with_line_and_column(cli: CliInvoker, workdir: Path) -> None:
    profile = workdir / "smtpconn.toml"
    profile.write_text('version = 1\n\n[[addresses]]\naddress = "a@example.com\n')
    before = profile.read_bytes()
    for args in (_args(address="b@example.com"), ["list"], ["profile", "validate"]):
        result = cli(*args)
        assert_refused(result.output, result.exit_code, workdir, before)
        assert "smtpconn.toml:4:" in result.stderr


def test_unknown_keys_are_named(cli: CliInvoker, workdir: Path, seeded: bytes) -> None:
    profile = workdir / "smtpconn.toml"
    profile.write_bytes(
        seeded.replace(b'mode = "outbound-only"', b'mode = "outbound-only"\nmoed = 1')
    )
    before = profile.read_bytes()
    result = cli(*_args(address="b@example.com"))
    assert_refused(result.output, result.exit_code, workdir, before)
    assert "addresses[0].moed" in result.stderr and "not a known key" in result.stderr


def test_clear_password_in_inbound_hash_is_refused(cli: CliInvoker, workdir: Path) -> None:
    profile = workdir / "smtpconn.toml"
    profile.write_text(
        'version = 1\n[[addresses]]\naddress = "a@example.com"\nmode = "bidirectional"\n'
        '[addresses.outbound]\nhost = "mail.example.com"\nusername = "u"\nsecret = "env:X"\n'
        '[addresses.inbound]\nusername = "u"\npassword_hash = "plaintext"\n'
    )
    result = cli("profile", "validate")
    assert result.exit_code == 2
    assert "password_hash" in result.stderr and "scrypt" in result.stderr
    assert "plaintext" not in result.output


def test_future_profile_version_is_refused(cli: CliInvoker, workdir: Path) -> None:
    (workdir / "smtpconn.toml").write_text("version = 99\n")
    result = cli("list")
    assert result.exit_code == 2 and "upgrade smtpconn" in result.stderr


# ----------------------------------------------------------------------------------------------
# Property-based: malformed values of every kind, generated.

_FORBIDDEN_IN_LOCAL = list(' "(),:;<>@[\\]\r\n\t\x00\x7f')
_NON_LDH = list(" !\"#$%&'()*+,/:;<=>?@[\\]^_`{|}~\r\n\t")
_label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)


@st.composite
def bad_addresses(draw: st.DrawFn) -> str:
    local = draw(_label)
    domain = f"{draw(_label)}.example"
    kind = draw(
        st.sampled_from(["local-char", "no-at", "empty-local", "long-local", "domain-char"])
    )
    if kind == "local-char":
        # Inside the local part: surrounding whitespace is trimmed as a paste accident.
        local += draw(_label)
        position = draw(st.integers(1, len(local) - 1))
        bad = draw(st.sampled_from(_FORBIDDEN_IN_LOCAL))
        local = local[:position] + bad + local[position:]
        return f"{local}@{domain}"
    if kind == "no-at":
        return f"{local}{domain}"
    if kind == "empty-local":
        return f"@{domain}"
    if kind == "long-local":
        return "x" * draw(st.integers(65, 300)) + f"@{domain}"
    bad = draw(st.sampled_from(_NON_LDH))
    return f"{local}@{draw(_label)}{bad}{draw(_label)}.example"


@st.composite
def bad_servers(draw: st.DrawFn) -> str:
    host = f"{draw(_label)}.example"
    kind = draw(st.sampled_from(["port", "host-char"]))
    if kind == "port":
        port = draw(st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
        return f"{host}:{port}"
    bad = draw(st.sampled_from(_NON_LDH))
    return f"{draw(_label)}{bad}{host}"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(address=bad_addresses())
def test_generated_bad_addresses_are_refused(
    cli: CliInvoker, workdir: Path, seeded: bytes, address: str
) -> None:
    result = cli(*_args(address=address))
    assert_refused(result.output, result.exit_code, workdir, seeded)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(server=bad_servers())
def test_generated_bad_servers_are_refused(
    cli: CliInvoker, workdir: Path, seeded: bytes, server: str
) -> None:
    result = cli(*_args(**{"--server": server}))
    assert_refused(result.output, result.exit_code, workdir, seeded)


USAGE_MISTAKES = {
    "value that does not parse": (
        [*_args(), "--max-connections", "many"],
        "--max-connections",
        "give --max-connections a value it takes; `smtpconn add-address -h` describes it",
    ),
    "unknown option": (
        [*_args(), "--outbound-host", "mail.example.com"],
        "No such option: --outbound-host",
        "`smtpconn add-address -h` lists the arguments and options",
    ),
    "missing argument": (
        ["add-address"],
        "Missing argument 'ADDRESS'",
        "give ADDRESS; `smtpconn add-address -h` describes it",
    ),
    "unknown command": (
        ["add-adress", "support@example.com"],
        "No such command 'add-adress'",
        "`smtpconn -h` lists the arguments and options",
    ),
    "unknown option of a sub-command": (
        ["queue", "list", "--bogus"],
        "No such option: --bogus",
        "`smtpconn queue list -h` lists the arguments and options",
    ),
}


@pytest.mark.parametrize("json_first", [False, True], ids=["json-last", "json-global"])
@pytest.mark.parametrize("case", USAGE_MISTAKES, ids=list(USAGE_MISTAKES))
def test_usage_mistakes_found_by_the_parser_get_error_fix_and_json(
    cli: CliInvoker, workdir: Path, seeded: bytes, case: str, json_first: bool
) -> None:
    args, message, fix = USAGE_MISTAKES[case]
    result = cli(*(["--json", *args] if json_first else [*args, "--json"]))
    assert_refused(result.output, result.exit_code, workdir, seeded)
    assert f"fix: {fix}" in result.stderr
    assert "Usage:" not in result.stderr  # click's own report is replaced, not added to
    # A script running with --json gets a document, not an empty stdout.
    error = json.loads(result.stdout)["error"]
    assert message in error["message"]
    assert error["fix"] == fix and error["exit_code"] == 2


def test_usage_mistakes_without_json_leave_stdout_empty(
    cli: CliInvoker, workdir: Path, seeded: bytes
) -> None:
    result = cli("add-address")
    assert result.exit_code == 2 and result.stdout == ""
    assert "error: Missing argument 'ADDRESS'" in result.stderr


def test_no_arguments_still_print_the_help(cli: CliInvoker) -> None:
    result = cli()
    assert "Commands:" in result.output and "add-address" in result.output
