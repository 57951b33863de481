"""``unauthenticated_policy`` and ``trusted_arc_sealers`` through add-address, the profile, list,
export and import (the real CLI app)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.conftest import CliInvoker


def _add(cli: CliInvoker, address: str, *extra: str):  # type: ignore[no-untyped-def]
    return cli("add-address", address, "--workflow", "forwarding", *extra)


def _profile(workdir: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads((workdir / "smtpconn.toml").read_text())


def test_policy_and_sealers_are_stored_listed_and_exported(cli: CliInvoker, workdir: Path) -> None:
    result = _add(
        cli,
        "help@example.com",
        "--unauthenticated-policy",
        "HOLD",
        "--trusted-arc-sealers",
        "Contoso.onmicrosoft.com, google.com,google.com.",
    )
    assert result.exit_code == 0, result.output
    assert _add(cli, "plain@example.com").exit_code == 0
    entries = _profile(workdir)["addresses"]
    assert entries[0]["unauthenticated_policy"] == "hold"
    assert entries[0]["trusted_arc_sealers"] == ["contoso.onmicrosoft.com", "google.com"]
    assert "unauthenticated_policy" not in entries[1]  # the default (tag) is not written

    listed = cli("list")
    # rich folds narrow cells: look for the pieces
    assert "policy" in listed.stdout and "hold" in listed.stdout
    assert "contoso" in listed.stdout
    described = json.loads(cli("--json", "list").stdout)["addresses"]
    assert [d["unauthenticated_policy"] for d in described] == ["hold", "tag"]

    exported = cli("export", "--format", "jsonl")
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert rows[0]["trusted_arc_sealers"] == "contoso.onmicrosoft.com,google.com"
    (workdir / "smtpconn.toml").unlink()
    (workdir / "rows.jsonl").write_text(exported.stdout)
    imported = cli("import", str(workdir / "rows.jsonl"))
    assert imported.exit_code == 0, imported.output
    assert _profile(workdir)["addresses"] == entries


def test_bad_policy_or_sealer_exits_2_and_changes_nothing(cli: CliInvoker, workdir: Path) -> None:
    assert _add(cli, "help@example.com").exit_code == 0
    before = (workdir / "smtpconn.toml").read_bytes()
    bad = _add(cli, "x@example.com", "--unauthenticated-policy", "quarantine")
    assert bad.exit_code == 2
    assert "--unauthenticated-policy" in bad.output and "tag | hold | reject" in bad.output
    bad = _add(cli, "x@example.com", "--trusted-arc-sealers", "google.com,not a domain")
    assert bad.exit_code == 2 and "--trusted-arc-sealers" in bad.output
    assert "Traceback" not in bad.output
    assert (workdir / "smtpconn.toml").read_bytes() == before


def test_a_hand_edited_bad_value_is_a_profile_finding(cli: CliInvoker, workdir: Path) -> None:
    (workdir / "smtpconn.toml").write_text(
        'version = 1\n[[addresses]]\naddress = "a@example.com"\nmode = "outbound-only"\n'
        'workflow = "forwarding"\nunauthenticated_policy = "drop"\n'
        'trusted_arc_sealers = ["ok.example", "-bad-"]\n'
    )
    result = cli("profile", "validate")
    assert result.exit_code == 2
    assert "addresses[0].unauthenticated_policy" in result.output
    assert "addresses[0].trusted_arc_sealers" in result.output


def test_a_policy_on_an_authenticated_bidirectional_address_warns_where_it_applies(
    cli: CliInvoker, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unauthenticated mail to such an address is refused at RCPT (530): the policy can never
    act there. Stored (it acts if the address moves to forwarding), with a warning."""
    monkeypatch.setenv("SMTP_PASSWORD", "x")
    result = cli(
        "add-address",
        "support@example.com",
        "--mode",
        "bidirectional",
        "--server",
        "mail.example.com",
        "--username",
        "helpdesk",
        "--secret",
        "env:SMTP_PASSWORD",
        "--unauthenticated-policy",
        "reject",
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no effect on a bidirectional address" in text
    assert "outbound-only addresses and addresses under the forwarding workflow" in text
    assert _profile(workdir)["addresses"][0]["unauthenticated_policy"] == "reject"
    quiet = _add(cli, "help@example.com", "--unauthenticated-policy", "reject")
    assert quiet.exit_code == 0 and "no effect" not in quiet.output
