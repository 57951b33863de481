"""send-test --direction inbound against a real ``smtpconn relay`` process: the test message goes
to the relay's inbound listener as the customer's server (TLS + AUTH) or a forwarder (no AUTH)
would send it, and is read back from the relay's Maildir sink with the tag the relay gave it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.lab import Lab
from tests.conftest import CliInvoker, CliResult
from tests.integration.relay.conftest import RelayProcess

from .relay_connector import INBOUND_USER, Connector, assert_no_secret


def send_inbound(
    cli: CliInvoker, connector: Connector, address: str, lab_args: list[str], *extra: str
) -> CliResult:
    return cli(
        "send-test", address, "--direction", "inbound", "--wait", "10",
        "--profile", str(connector.profile), *extra, *lab_args,
    )  # fmt: skip


def test_bidirectional_logs_in_over_tls_and_is_tagged_authenticated(
    lab: Lab, connector: Connector, relay: RelayProcess, cli: CliInvoker, lab_args: list[str]
) -> None:
    result = send_inbound(
        cli, connector, connector.bidirectional, lab_args,
        "--json", "-v", "--inbound-password-file", str(connector.password_file),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["accepted"] is True and report["problem"] is None
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["auth"]["ok"] and stages["auth"]["code"] == 235
    assert report["tls"]["verified"] is True  # the relay's certificate, checked against the CA
    received = report["received"]
    assert received["tag"] == {"tag": "authenticated", "mode": "bidirectional"}
    assert received["token_header"] == report["token"]
    assert received["sending_server"]["address"] == "127.0.0.1"
    assert received["authentication"] is not None  # the relay's own Authentication-Results
    assert 0 <= received["latency_seconds"] < 10
    # Independently of send-test: the copy is in the sink and the relay logged the login.
    raw = connector.env.wait_for_sink(report["token"], timeout=5)
    assert b"X-Smtpconn-Tag: authenticated; mode=bidirectional" in raw
    assert report["queue_id"] and report["queue_id"].encode() in raw  # relay's Received line
    assert f"auth={INBOUND_USER} tag=authenticated" in relay.log.read_text()
    # Every line of the relay's log is its own key=value format: no library noise.
    assert all(line.startswith("ts=") for line in relay.log.read_text().splitlines() if line)
    assert "AUTH PLAIN <redacted>" in result.stderr
    assert_no_secret(result.output, connector.inbound_password, INBOUND_USER)
    assert_no_secret(result.output, lab.user.password)
    assert_no_secret(relay.log.read_text(), connector.inbound_password, INBOUND_USER)


def test_password_from_the_environment_and_human_output(
    connector: Connector,
    relay: RelayProcess,
    cli: CliInvoker,
    lab_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SMTPCONN_INBOUND_PASSWORD", connector.inbound_password)
    result = send_inbound(cli, connector, connector.bidirectional, lab_args)
    assert result.exit_code == 0, result.output
    assert "tagged authenticated (mode bidirectional)" in result.stdout
    assert "handed over by: 127.0.0.1" in result.stdout
    assert "OK" in result.stdout
    assert_no_secret(result.output, connector.inbound_password, INBOUND_USER)


def test_outbound_only_is_plain_forwarding_tagged_unauthenticated(
    lab: Lab, connector: Connector, relay: RelayProcess, cli: CliInvoker, lab_args: list[str]
) -> None:
    result = send_inbound(cli, connector, connector.outbound_only, lab_args, "--json", "-v")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accepted"] is True
    assert "auth" not in [s["stage"] for s in report["stages"]]
    assert "C: AUTH" not in result.stderr
    assert report["tls"]["verified"] is True
    # auth=none: the test message's From domain publishes no DMARC policy.
    assert report["received"]["tag"] == {
        "tag": "unauthenticated",
        "mode": "outbound-only",
        "auth": "none",
    }
    raw = connector.env.wait_for_sink(report["token"], timeout=5)
    assert b"X-Smtpconn-Tag: unauthenticated; mode=outbound-only; auth=none" in raw
    assert_no_secret(result.output, lab.user.password)


def test_wrong_inbound_password_fails_at_auth(
    connector: Connector, relay: RelayProcess, cli: CliInvoker, lab_args: list[str]
) -> None:
    wrong = connector.env.root / "wrong-password"
    wrong.write_text("not-the-inbound-password\n")
    result = send_inbound(
        cli, connector, connector.bidirectional, lab_args,
        "--json", "-v", "--inbound-password-file", str(wrong),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["failure"]["stage"] == "auth"
    assert report["failure"]["code"] == 535
    assert report["problem"].startswith("auth stage")
    assert "mail" not in [s["stage"] for s in report["stages"]]
    assert report["received"] is None
    assert connector.env.sink_messages() == []
    assert_no_secret(result.output, "not-the-inbound-password", INBOUND_USER)
    assert_no_secret(result.output, connector.inbound_password, INBOUND_USER)


def test_missing_inbound_password_is_bad_usage(
    connector: Connector, relay: RelayProcess, cli: CliInvoker, lab_args: list[str]
) -> None:
    result = send_inbound(cli, connector, connector.bidirectional, lab_args, "--json")
    assert result.exit_code == 2, result.output
    assert "inbound password" in result.stderr and "--inbound-password-file" in result.stderr
    assert "Traceback" not in result.output

    missing = send_inbound(
        cli, connector, connector.bidirectional, lab_args,
        "--inbound-password-file", str(Path(connector.env.root) / "no-such-file"),
    )  # fmt: skip
    assert missing.exit_code == 2, missing.output
    assert "cannot read --inbound-password-file" in missing.stderr
    # Nothing was sent: the relay never saw a session.
    assert "event=inbound.accepted" not in relay.log.read_text()
    assert connector.env.sink_messages() == []


def test_relay_not_running_could_not_connect(
    connector: Connector, cli: CliInvoker, lab_args: list[str]
) -> None:
    result = send_inbound(
        cli, connector, connector.bidirectional, lab_args,
        "--json", "--inbound-password-file", str(connector.password_file),
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["failure"]["stage"] == "connect" and report["failure"]["kind"] == "refused"
    assert "smtpconn relay` running" in report["problem"]
