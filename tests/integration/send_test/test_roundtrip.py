"""send-test --direction roundtrip: out through the lab Postfix (TLS + AUTH, DKIM-signed) to the
support address, which Postfix's relay transport hands to a real ``smtpconn relay`` process over
TLS + AUTH with the inbound credentials ``add-address`` generated; send-test waits for the copy in
the relay's Maildir sink and reports what it proves."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from lab.lab import Lab
from lab.zones import RELAY_DOMAIN
from tests.conftest import CliInvoker
from tests.integration.relay.conftest import RelayProcess

from .relay_connector import INBOUND_USER, RELAY_HOSTNAME, Connector, assert_no_secret


@pytest.fixture
def helpdesk_target(lab: Lab) -> Iterator[str]:
    """helpdesk.test is the lab domain with SPF, DKIM and DMARC published for the lab Postfix,
    so the round trip's copy can pass all three; its relay target is unset again afterwards."""
    yield RELAY_DOMAIN
    lab.clear_relay_target(RELAY_DOMAIN)


def relay_helpdesk_to(lab: Lab, target: str, relay: RelayProcess, connector: Connector) -> None:
    """The lab Postfix hands mail for ``target`` to the running relay over verified TLS, logged
    in with the connector's inbound credentials."""
    lab.set_relay_target(
        target, "127.0.0.1", relay.inbound_port, INBOUND_USER, connector.inbound_password,
        tls="secure", match=RELAY_HOSTNAME,
    )  # fmt: skip


def roundtrip(
    cli: CliInvoker, connector: Connector, lab_args: list[str], *extra: str
) -> tuple[int, str, str]:
    result = cli(
        "send-test", connector.bidirectional, "--direction", "roundtrip",
        "--profile", str(connector.profile), *extra, *lab_args,
    )  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("connector_domain", [RELAY_DOMAIN])
def test_roundtrip_arrives_tagged_with_spf_dkim_dmarc(
    lab: Lab,
    helpdesk_target: str,
    connector: Connector,
    relay: RelayProcess,
    cli: CliInvoker,
    lab_args: list[str],
) -> None:
    relay_helpdesk_to(lab, helpdesk_target, relay, connector)
    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--json", "-v", "--wait", "20")
    assert code == 0, stdout + stderr
    report = json.loads(stdout)
    assert report["direction"] == "roundtrip" and report["accepted"] is True
    assert report["recipient"] == connector.bidirectional and report["dkim_signed"] is True
    assert report["queue_id"]  # Postfix's, from the outbound leg
    received = report["received"]
    assert 0 <= received["latency_seconds"] < 20
    assert received["tag"] == {"tag": "authenticated", "mode": "bidirectional"}
    # The relay's Received line names the customer's server as it really connected.
    assert received["sending_server"] == {"address": "127.0.0.1", "helo": lab.server_name}
    auth = received["authentication"]
    assert auth["spf"]["result"] == "pass"
    assert auth["spf"]["smtp.mailfrom"] == RELAY_DOMAIN
    assert [(d["result"], d["header.d"]) for d in auth["dkim"]] == [("pass", RELAY_DOMAIN)]
    assert auth["dmarc"]["result"] == "pass"
    assert received["dkim_verified_by_smtpconn"]["result"] == "pass"
    # The copy really went through Postfix: its queue id is in Postfix's Received line.
    raw = connector.env.wait_for_sink(report["token"], timeout=5)
    assert report["queue_id"].encode() in raw
    assert f"auth={INBOUND_USER} tag=authenticated" in relay.log.read_text()
    for text in (stdout, stderr, relay.log.read_text()):
        assert_no_secret(text, lab.user.password, lab.user.username)
        assert_no_secret(text, connector.inbound_password, INBOUND_USER)

    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--wait", "20")
    assert code == 0, stdout + stderr
    for line in (
        "tagged authenticated (mode bidirectional)",
        f"handed over by: 127.0.0.1 (HELO {lab.server_name})",
        "SPF: pass",
        "DKIM: pass",
        "DMARC: pass",
        "DKIM verified by smtpconn: pass",
    ):
        assert line in stdout, stdout


def test_roundtrip_that_cannot_arrive_fails_in_time(
    lab: Lab,
    relay_domain: str,
    connector: Connector,
    relay: RelayProcess,
    cli: CliInvoker,
    lab_args: list[str],
) -> None:
    # The relay runs, but Postfix logs in to it with a wrong password: the message stays in
    # Postfix's queue and never reaches the relay's sink.
    lab.set_relay_target(
        relay_domain, "127.0.0.1", relay.inbound_port, INBOUND_USER, "not-the-password"
    )
    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--json", "--wait", "1.5")
    assert code == 1, stdout + stderr
    report = json.loads(stdout)
    assert report["accepted"] is True and report["received"] is None  # sent, never came back
    assert "did not arrive in time" in report["problem"]
    assert report["queue_id"] in report["problem"]  # where to look next

    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--wait", "0.5")
    assert code == 1, stdout + stderr
    assert "did not arrive in time" in " ".join(stdout.split())
    assert "Traceback" not in stdout + stderr


def test_roundtrip_without_a_running_relay_sends_nothing_and_exits_3(
    lab: Lab, relay_domain: str, connector: Connector, cli: CliInvoker, lab_args: list[str]
) -> None:
    lab.set_relay_target(
        relay_domain, "127.0.0.1", connector.inbound_port, INBOUND_USER,
        connector.inbound_password,
    )  # fmt: skip
    since = lab.postfix.log_position()
    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--wait", "5")
    assert code == 3, stdout + stderr
    text = " ".join(stderr.split())
    assert f"the relay is not listening on 127.0.0.1:{connector.inbound_port}" in text
    assert "connection refused" in text and "nothing was sent" in text
    assert "start `smtpconn relay`" in text and "Traceback" not in stdout + stderr
    assert "sasl_username" not in lab.postfix.log_text(since)  # nobody logged in to send


def test_wait_0_is_refused_before_sending(
    connector: Connector, cli: CliInvoker, lab_args: list[str]
) -> None:
    for direction in ("roundtrip", "inbound"):
        result = cli(
            "send-test", connector.bidirectional, "--direction", direction, "--wait", "0",
            "--profile", str(connector.profile), *lab_args,
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "--wait 0 leaves no time" in " ".join(result.stderr.split())


def test_roundtrip_needs_a_bidirectional_address_and_a_maildir_sink(
    connector: Connector, cli: CliInvoker, lab_args: list[str]
) -> None:
    result = cli(
        "send-test", connector.outbound_only, "--direction", "roundtrip",
        "--profile", str(connector.profile), *lab_args,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "needs a bidirectional address" in " ".join(result.stderr.split())

    profile = connector.profile
    profile.write_text(
        profile.read_text().replace(
            'kind = "maildir"\npath = "helpdesk"', 'kind = "pipe"\ncommand = ["/bin/cat"]'
        )
    )
    result = cli(
        "send-test", connector.bidirectional, "--direction", "roundtrip",
        "--profile", str(profile), *lab_args,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Maildir sink" in " ".join(result.stderr.split())


@pytest.mark.parametrize("connector_domain", [RELAY_DOMAIN])
@pytest.mark.parametrize("dkim_signer", ["server"])
def test_roundtrip_proves_the_signature_the_customers_server_added(
    lab: Lab,
    helpdesk_target: str,
    connector: Connector,
    relay: RelayProcess,
    cli: CliInvoker,
    lab_args: list[str],
) -> None:
    # --dkim-selector without --dkim-key: smtpconn does not sign; the lab Postfix's signing
    # port has OpenDKIM sign with that selector, and the copy that came back must carry it.
    relay_helpdesk_to(lab, helpdesk_target, relay, connector)
    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--json", "--wait", "20")
    assert code == 0, stdout + stderr
    report = json.loads(stdout)
    assert report["dkim_signed"] is False  # smtpconn held no key: the signature is the server's
    verified = report["received"]["dkim_verified_by_smtpconn"]
    assert verified["result"] == "pass", verified
    assert (verified["d"], verified["s"]) == (RELAY_DOMAIN, "sel2048")
    raw = connector.env.wait_for_sink(report["token"], timeout=5)
    assert b"DKIM-Signature:" in raw and b"s=sel2048" in raw
    assert [(d["result"], d["header.d"]) for d in report["received"]["authentication"]["dkim"]] == [
        ("pass", RELAY_DOMAIN)
    ]


@pytest.mark.parametrize("connector_domain", [RELAY_DOMAIN])
@pytest.mark.parametrize("dkim_signer", ["nobody"])
def test_roundtrip_fails_when_the_server_does_not_sign_as_the_profile_says(
    lab: Lab,
    helpdesk_target: str,
    connector: Connector,
    relay: RelayProcess,
    cli: CliInvoker,
    lab_args: list[str],
) -> None:
    relay_helpdesk_to(lab, helpdesk_target, relay, connector)
    code, stdout, stderr = roundtrip(cli, connector, lab_args, "--json", "--wait", "20")
    assert code == 1, stdout + stderr
    report = json.loads(stdout)
    assert report["received"] is not None  # it arrived, unsigned
    assert "your server's DKIM signature (d=helpdesk.test s=sel2048)" in report["problem"]
    assert "missing or does not verify" in report["problem"]
