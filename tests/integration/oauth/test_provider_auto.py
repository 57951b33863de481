"""``add-address --provider auto`` (the default) reading the domain's MX from the lab's NSD:
m365.test's MX is an Exchange Online protection host, gworkspace.test's is Google's aspmx; the
submission server, its security and XOAUTH2 are filled in from that, explicit options win, bad
input exits 2 leaving the profile byte-identical, and ``--mode bidirectional`` for such a
provider explains why outbound-only is the mode to use (readable first with ``--dry-run``)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lab.lab import Lab
from tests.conftest import CliInvoker, CliResult

SECRET = "auto-provider-secret-never-shown"
EXISTING = """version = 1

[[addresses]]
address = "other@good.test"
mode = "outbound-only"

[addresses.outbound]
host = "mail.good.test"
port = 587
username = "other"
secret = "env:OTHER"
"""


@pytest.fixture
def profile(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APP_SECRET", SECRET)
    path = workdir / "smtpconn.toml"
    path.write_text(EXISTING)
    return path


def _add(cli: CliInvoker, lab: Lab, address: str, *options: str) -> CliResult:
    return cli("add-address", address, "--resolver", lab.resolver, "--timeout", "5", *options)


def _microsoft(*extra: str) -> list[str]:
    return [
        "--mode", "outbound-only", "--username", "support@m365.test",
        "--oauth-flow", "client-credentials", "--oauth-tenant", "m365test.onmicrosoft.com",
        "--oauth-client-id", "11111111-2222-3333-4444-555555555555",
        "--oauth-client-secret", "env:APP_SECRET", *extra,
    ]  # fmt: skip


def _google(cache: Path, *extra: str) -> list[str]:
    return [
        "--mode", "outbound-only", "--username", "support@gworkspace.test",
        "--oauth-flow", "refresh-token", "--oauth-client-id", "google-client.apps.test",
        "--oauth-token-cache", str(cache), *extra,
    ]  # fmt: skip


def _outbound(profile: Path, address: str) -> dict[str, Any]:
    data = tomllib.loads(profile.read_text())
    entry = next(a for a in data["addresses"] if a["address"] == address)
    outbound: dict[str, Any] = entry["outbound"]
    return outbound


def test_microsoft_mx_fills_office365_starttls_xoauth2(
    lab: Lab, cli: CliInvoker, profile: Path
) -> None:
    result = _add(cli, lab, "support@m365.test", *_microsoft("--json"))
    assert result.exit_code == 0, result.output
    outbound = _outbound(profile, "support@m365.test")
    assert (outbound["host"], outbound["port"]) == ("smtp.office365.com", 587)
    assert (outbound["security"], outbound["auth"]) == ("starttls", "xoauth2")
    assert outbound["oauth"]["provider"] == "microsoft365"
    assert SECRET not in profile.read_text() and SECRET not in result.output


def test_google_mx_fills_gmail_starttls_xoauth2(
    lab: Lab, cli: CliInvoker, profile: Path, tmp_path: Path
) -> None:
    result = _add(cli, lab, "support@gworkspace.test", *_google(tmp_path / "google.json"))
    assert result.exit_code == 0, result.output
    outbound = _outbound(profile, "support@gworkspace.test")
    assert (outbound["host"], outbound["port"]) == ("smtp.gmail.com", 587)
    assert (outbound["security"], outbound["auth"]) == ("starttls", "xoauth2")
    assert outbound["oauth"]["provider"] == "google"


def test_explicit_options_win_over_the_mx(lab: Lab, cli: CliInvoker, profile: Path) -> None:
    # An explicit server (and security) is kept; the MX still chooses the token endpoints.
    result = _add(
        cli, lab, "support@m365.test",
        *_microsoft("--server", "mail.good.test:465", "--security", "tls"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    outbound = _outbound(profile, "support@m365.test")
    assert (outbound["host"], outbound["port"], outbound["security"]) == (
        "mail.good.test",
        465,
        "tls",
    )
    assert outbound["oauth"]["provider"] == "microsoft365"
    # An explicit provider wins over the MX: Google's server for a domain whose MX is Microsoft's.
    result = _add(
        cli, lab, "support@m365.test", "--readd", "--provider", "google",
        "--mode", "outbound-only", "--username", "support@m365.test",
        "--oauth-flow", "refresh-token", "--oauth-client-id", "g",
        "--oauth-token-cache", str(profile.parent / "g.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _outbound(profile, "support@m365.test")["host"] == "smtp.gmail.com"


def test_a_domain_without_provider_mx_gets_no_preset(
    lab: Lab, cli: CliInvoker, profile: Path
) -> None:
    before = profile.read_bytes()
    result = _add(
        cli, lab, "support@good.test", "--mode", "outbound-only", "--username", "u",
        "--secret", "env:APP_SECRET",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--server" in result.output
    assert profile.read_bytes() == before


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--provider", "yahoo", *_microsoft()], "--provider"),
        (
            [o for o in _microsoft() if o not in ("--oauth-tenant", "m365test.onmicrosoft.com")],
            "--oauth-tenant",
        ),
        (
            [*_microsoft()[:-2], "--oauth-client-secret", "Lit3ral-s3cret"],
            "--oauth-client-secret",
        ),
    ],
    ids=["unknown-provider", "missing-tenant", "literal-secret"],
)
def test_bad_input_exits_2_and_leaves_the_profile_byte_identical(
    lab: Lab, cli: CliInvoker, profile: Path, options: list[str], named: str
) -> None:
    before = profile.read_bytes()
    result = _add(cli, lab, "support@m365.test", *options)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert "Lit3ral-s3cret" not in result.output
    assert profile.read_bytes() == before


@pytest.mark.parametrize(
    ("address", "advice"),
    [
        ("support@m365.test", "Exchange Online outbound connectors"),
        ("support@gworkspace.test", "Gmail routing rules"),
    ],
)
def test_bidirectional_for_a_hosted_provider_recommends_outbound_only(
    lab: Lab, cli: CliInvoker, profile: Path, tmp_path: Path, address: str, advice: str
) -> None:
    options = _microsoft() if "m365" in address else _google(tmp_path / "c.json")
    options = options[2:]  # without --mode outbound-only
    before = profile.read_bytes()
    dry = _add(cli, lab, address, "--mode", "bidirectional", *options, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert advice in dry.output and "--mode outbound-only" in dry.output
    assert profile.read_bytes() == before  # the advice is read before anything changes
    as_json = _add(cli, lab, address, "--mode", "bidirectional", *options, "--dry-run", "--json")
    assert any(advice in w for w in json.loads(as_json.stdout)["warnings"])
    assert profile.read_bytes() == before
    # Without --dry-run it is done as asked, with the same advice.
    done = _add(cli, lab, address, "--mode", "bidirectional", *options)
    assert done.exit_code == 0, done.output
    assert advice in done.output
    outbound_only = _add(cli, lab, address, "--readd", "--mode", "outbound-only", *options)
    assert outbound_only.exit_code == 0 and advice not in outbound_only.output
