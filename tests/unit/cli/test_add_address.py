"""add-address, list, remove-address and profile validate through the real CLI app."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from smtpconn.profile.secrets import verify_password
from tests.conftest import CliInvoker

SECRET_VALUE = "s3cr3t-value-that-must-never-be-written"


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", SECRET_VALUE)


def add_bidirectional(cli: CliInvoker, address: str = "support@example.com", *extra: str):  # type: ignore[no-untyped-def]
    return cli(
        "add-address",
        address,
        "--mode",
        "bidirectional",
        "--server",
        "mail.example.com",
        "--username",
        "helpdesk",
        "--secret",
        "env:SMTP_PASSWORD",
        *extra,
    )


def profile_data(workdir: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads((workdir / "smtpconn.toml").read_text())


def test_bidirectional_address_gets_defaults_and_hashed_inbound_credentials(
    cli: CliInvoker, workdir: Path
) -> None:
    result = add_bidirectional(cli, "support@example.com", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    password = document["inbound_password"]
    assert document["action"] == "added"
    assert document["outbound"] == {
        "host": "mail.example.com",
        "port": 587,
        "security": "starttls",
        "auth": "auto",
        "username": "helpdesk",
        "secret": "env:SMTP_PASSWORD",
    }

    profile_file = workdir / "smtpconn.toml"
    text = profile_file.read_text()
    assert stat.S_IMODE(profile_file.stat().st_mode) == 0o600
    assert SECRET_VALUE not in text and password not in text
    entry = profile_data(workdir)["addresses"][0]
    assert entry["workflow"] == "authenticated"
    assert verify_password(password, entry["inbound"]["password_hash"])
    assert not verify_password(password + "x", entry["inbound"]["password_hash"])


def test_port_465_means_implicit_tls(cli: CliInvoker, workdir: Path) -> None:
    result = cli(
        "add-address", "help@example.org", "--mode", "outbound-only",
        "--server", "smtp.example.org:465", "--username", "u", "--secret", "env:SMTP_PASSWORD",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    outbound = profile_data(workdir)["addresses"][0]["outbound"]
    assert (outbound["port"], outbound["security"]) == (465, "tls")
    assert "inbound" not in profile_data(workdir)["addresses"][0]


def test_security_tls_without_port_defaults_to_465(cli: CliInvoker, workdir: Path) -> None:
    result = cli(
        "add-address", "help@example.org", "--mode", "outbound-only", "--security", "tls",
        "--server", "smtp.example.org", "--username", "u", "--secret", "env:SMTP_PASSWORD",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert profile_data(workdir)["addresses"][0]["outbound"]["port"] == 465


def test_password_file_receives_the_password_and_output_does_not(
    cli: CliInvoker, workdir: Path
) -> None:
    password_file = workdir / "inbound.pw"
    result = add_bidirectional(
        cli, "support@example.com", "--inbound-password-file", str(password_file)
    )
    assert result.exit_code == 0, result.output
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password not in result.output
    entry = profile_data(workdir)["addresses"][0]
    assert verify_password(password, entry["inbound"]["password_hash"])


def test_forwarding_address_must_be_readded_to_move_to_authenticated(
    cli: CliInvoker, workdir: Path
) -> None:
    assert cli("add-address", "support@example.com", "--workflow", "forwarding").exit_code == 0
    before = (workdir / "smtpconn.toml").read_bytes()

    refused = add_bidirectional(cli)
    assert refused.exit_code == 2
    assert "standard forwarding" in refused.stderr and "--readd" in refused.stderr
    assert (workdir / "smtpconn.toml").read_bytes() == before

    moved = add_bidirectional(cli, "support@example.com", "--readd", "--json")
    assert moved.exit_code == 0, moved.output
    document = json.loads(moved.stdout)
    assert document["action"] == "re-added"
    assert document["previous_workflow"] == "forwarding"
    entries = profile_data(workdir)["addresses"]
    assert len(entries) == 1
    assert entries[0]["workflow"] == "authenticated" and entries[0]["mode"] == "bidirectional"


def test_readd_replaces_settings_and_keeps_nothing_else(cli: CliInvoker, workdir: Path) -> None:
    key = workdir / "dkim.pem"
    _write_rsa_key(key)
    assert (
        add_bidirectional(
            cli, "support@example.com", "--dkim-selector", "s1", "--dkim-key", str(key)
        ).exit_code
        == 0
    )
    result = cli(
        "add-address", "support@example.com", "--readd", "--mode", "outbound-only",
        "--server", "other.example.com:2525", "--username", "v", "--secret", "env:SMTP_PASSWORD",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = profile_data(workdir)["addresses"][0]
    assert entry["mode"] == "outbound-only"
    assert entry["outbound"]["host"] == "other.example.com"
    assert entry["outbound"]["port"] == 2525
    assert "dkim" not in entry and "inbound" not in entry


def test_duplicate_without_readd_is_refused(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli).exit_code == 0
    before = (workdir / "smtpconn.toml").read_bytes()
    again = add_bidirectional(cli, "support@EXAMPLE.com")
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_readd_of_unknown_address_is_refused(cli: CliInvoker, workdir: Path) -> None:
    result = add_bidirectional(cli, "nobody@example.com", "--readd")
    assert result.exit_code == 2
    assert "not in the profile" in result.stderr
    assert not (workdir / "smtpconn.toml").exists()


def test_idn_domain_is_stored_as_a_label_and_shown_both_ways(
    cli: CliInvoker, workdir: Path
) -> None:
    assert add_bidirectional(cli, "support@Bücher.example").exit_code == 0
    assert profile_data(workdir)["addresses"][0]["address"] == "support@xn--bcher-kva.example"
    listed = json.loads(cli("list", "--json").stdout)["addresses"][0]
    assert listed["address"] == "support@xn--bcher-kva.example"
    assert listed["address_unicode"] == "support@bücher.example"
    # The same domain typed as its A-label is the same address.
    assert add_bidirectional(cli, "support@XN--BCHER-KVA.example").exit_code == 2


def test_list_table_and_json(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli, "a@example.com").exit_code == 0
    assert cli("add-address", "b@example.net", "--workflow", "forwarding").exit_code == 0
    table = cli("list")
    assert table.exit_code == 0
    assert "a@example.com" in table.stdout and "b@example.net" in table.stdout
    document = json.loads(cli("--json", "list").stdout)
    assert [e["address"] for e in document["addresses"]] == ["a@example.com", "b@example.net"]
    assert [e["workflow"] for e in document["addresses"]] == ["authenticated", "forwarding"]
    assert "password_hash" not in cli("list", "--json").stdout


def test_global_options_work_before_and_after_the_command(cli: CliInvoker, workdir: Path) -> None:
    other = workdir / "sub" / "p.toml"
    other.parent.mkdir()
    assert (
        cli(
            "--profile", str(other), "add-address", "x@example.com", "--workflow", "forwarding"
        ).exit_code
        == 0
    )
    assert (
        json.loads(cli("list", "--profile", str(other), "--json").stdout)["addresses"][0]["address"]
        == "x@example.com"
    )
    assert not (workdir / "smtpconn.toml").exists()


def test_remove_address(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli, "a@example.com").exit_code == 0
    assert cli("remove-address", "A@EXAMPLE.COM").exit_code == 2  # local part is case-sensitive
    result = cli("remove-address", "a@example.COM")
    assert result.exit_code == 0, result.output
    assert "addresses" not in profile_data(workdir)
    missing = cli("remove-address", "a@example.com")
    assert missing.exit_code == 2 and "not in the profile" in missing.stderr


def test_dry_run_shows_a_diff_and_writes_nothing(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli, "a@example.com").exit_code == 0
    before = (workdir / "smtpconn.toml").read_bytes()
    result = add_bidirectional(cli, "b@example.com", "--dry-run")
    assert result.exit_code == 0, result.output
    assert '+address = "b@example.com"' in result.stdout
    assert "<new scrypt hash>" in result.stdout
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_unset_env_reference_is_a_warning_not_an_error(
    cli: CliInvoker, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    result = cli(
        "add-address", "a@example.com", "--mode", "outbound-only", "--server", "mail.example.com",
        "--username", "u", "--secret", "env:NOT_SET_ANYWHERE",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "NOT_SET_ANYWHERE is not set" in result.stderr


def test_file_reference_must_exist_and_be_private(cli: CliInvoker, workdir: Path) -> None:
    secret_file = workdir / "pw"
    args = ("add-address", "a@example.com", "--mode", "outbound-only", "--server", "mail.example.com",
            "--username", "u", "--secret", f"file:{secret_file}")  # fmt: skip
    missing = cli(*args)
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    secret_file.write_text("hunter2\n")
    secret_file.chmod(0o644)
    loose = cli(*args)
    assert loose.exit_code == 2 and "chmod 600" in loose.stderr
    secret_file.chmod(0o600)
    ok = cli(*args)
    assert ok.exit_code == 0, ok.output
    assert "hunter2" not in (workdir / "smtpconn.toml").read_text()


def test_relative_file_reference_is_stored_absolute(cli: CliInvoker, workdir: Path) -> None:
    (workdir / "pw").write_text("x")
    (workdir / "pw").chmod(0o600)
    result = cli(
        "add-address", "a@example.com", "--mode", "outbound-only", "--server", "mail.example.com",
        "--username", "u", "--secret", "file:pw",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert profile_data(workdir)["addresses"][0]["outbound"]["secret"] == f"file:{workdir / 'pw'}"


def test_shared_inbound_username_reuses_the_existing_credentials(
    cli: CliInvoker, workdir: Path
) -> None:
    first = add_bidirectional(cli, "a@example.com", "--inbound-username", "acme", "--json")
    second = add_bidirectional(cli, "b@example.com", "--inbound-username", "acme", "--json")
    assert first.exit_code == second.exit_code == 0
    assert "inbound_password" not in json.loads(second.stdout)
    entries = profile_data(workdir)["addresses"]
    assert entries[0]["inbound"] == entries[1]["inbound"]
    # Sharing extends the login's scope, and add-address says so.
    assert json.loads(first.stdout)["inbound_login_scope"] == ["a@example.com"]
    assert json.loads(second.stdout)["inbound_login_scope"] == ["a@example.com", "b@example.com"]
    third = add_bidirectional(cli, "c@example.com", "--inbound-username", "acme")
    assert third.exit_code == 0, third.output
    said = " ".join(third.stdout.split())
    assert "shares the inbound login acme with a@example.com, b@example.com" in said
    assert "may now deliver to all 3 of them" in said
    own = add_bidirectional(cli, "d@example.com", "--json")
    assert json.loads(own.stdout)["inbound_login_scope"] == ["d@example.com"]


def test_sharing_a_login_with_one_address_says_both(cli: CliInvoker, workdir: Path) -> None:
    assert (
        add_bidirectional(cli, "support@example.com", "--inbound-username", "acme").exit_code == 0
    )
    second = add_bidirectional(cli, "sales@example.com", "--inbound-username", "acme")
    assert second.exit_code == 0, second.output
    text = " ".join(second.stdout.split())
    assert (
        "shares the inbound login acme with support@example.com: that login may now deliver to both"
    ) in text


def test_profile_validate(cli: CliInvoker, workdir: Path) -> None:
    assert add_bidirectional(cli).exit_code == 0
    assert cli("profile", "validate").exit_code == 0
    profile_file = workdir / "smtpconn.toml"
    profile_file.write_text(profile_file.read_text() + "\n[relay]\nlisten = 1\n")
    result = cli("profile", "validate", "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["valid"] is False
    assert any("relay.listen" in f and "not a known key" in f for f in document["findings"])


def _write_rsa_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def test_comments_in_the_profile_survive_add_readd_and_remove(
    cli: CliInvoker, workdir: Path
) -> None:
    assert add_bidirectional(cli, "a@example.com").exit_code == 0
    assert cli("add-address", "b@example.com", "--workflow", "forwarding").exit_code == 0
    profile_file = workdir / "smtpconn.toml"
    text = profile_file.read_text().replace(
        'address = "a@example.com"', '# the main queue, owned by Ops\naddress = "a@example.com"'
    )
    profile_file.write_text(text + "# end of file note\n")

    assert add_bidirectional(cli, "c@example.com").exit_code == 0
    assert cli("add-address", "b@example.com", "--readd", "--workflow", "forwarding").exit_code == 0
    assert cli("remove-address", "c@example.com").exit_code == 0

    after = profile_file.read_text()
    assert "# the main queue, owned by Ops" in after
    assert [e["address"] for e in profile_data(workdir)["addresses"]] == [
        "a@example.com",
        "b@example.com",
    ]
    assert cli("profile", "validate").exit_code == 0


def test_verify_table_prints_a_skip_reason_but_not_its_fix(cli: CliInvoker, workdir: Path) -> None:
    assert cli("add-address", "a@example.com", "--workflow", "forwarding").exit_code == 0
    # A forwarding address has no outbound server: these checks skip without any network.
    result = cli(
        "verify",
        "--only",
        "dns.server-address,tls.connect",
        "--resolver",
        "127.0.0.1:9",
        "--timeout",
        "0.3",
    )
    assert result.stdout.count("skipped:") == 2
    assert "fix:" not in result.stdout
    document = json.loads(
        cli(
            "verify",
            "--only",
            "tls.connect",
            "--json",
            "--resolver",
            "127.0.0.1:9",
            "--timeout",
            "0.3",
        ).stdout
    )
    assert document["addresses"][0]["checks"][0]["fix"]  # the JSON keeps every fix


def test_selector_without_key_means_the_customers_server_signs(
    cli: CliInvoker, workdir: Path
) -> None:
    result = add_bidirectional(cli, "support@example.com", "--dkim-selector", "selector1")
    assert result.exit_code == 0, result.output
    entry = profile_data(workdir)["addresses"][0]
    assert entry["dkim"] == {"selector": "selector1"}
    # The profile reads back (no private_key is not a finding) and lists the selector.
    assert cli("profile", "validate").exit_code == 0
    listed = cli("list")
    assert listed.exit_code == 0 and "selector1" in listed.stdout


def test_key_without_selector_is_refused_and_nothing_is_written(
    cli: CliInvoker, workdir: Path
) -> None:
    key = workdir / "dkim.pem"
    _write_rsa_key(key)
    result = add_bidirectional(cli, "support@example.com", "--dkim-key", str(key))
    assert result.exit_code == 2
    assert "--dkim-key needs --dkim-selector" in result.stderr
    assert not (workdir / "smtpconn.toml").exists()
