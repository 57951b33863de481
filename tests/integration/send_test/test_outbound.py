"""send-test outbound through the lab's real Postfix."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import dkim
import dns.resolver

from lab.lab import Lab
from lab.postfix import SEND_AS_DENIED
from tests.conftest import CliInvoker

RECIPIENT = "bob@good.test"


def _lab_dnsfunc(lab: Lab) -> Callable[..., bytes | None]:
    host, port = lab.resolver.split(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer[:1])

    return dnsfunc


def _assert_no_secret(lab: Lab, text: str) -> None:
    assert lab.user.password not in text
    assert base64.b64encode(lab.user.password.encode()).decode() not in text


def test_outbound_delivers_signed_message(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile()
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--json", "-v",
        "--profile", str(profile), *lab_args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    stages = [s["stage"] for s in report["stages"]]
    assert stages[:3] == ["connect", "banner", "ehlo"] and "auth" in stages and "data" in stages
    assert all(s["ok"] for s in report["stages"])
    assert report["queue_id"]
    assert report["dkim_signed"] is True and report["insecure"] is False
    delivered = lab.find_message(report["token"], RECIPIENT)
    msg = delivered.message
    assert msg["X-Smtpconn-Test"] == report["token"]
    assert report["token"] in str(msg["Subject"])
    assert msg["Message-ID"] == report["message_id"]
    assert report["queue_id"] in delivered.raw.decode(errors="replace")  # Postfix's Received
    # independent verification: dkimpy against the lab's DNS, on the copy Postfix delivered
    assert dkim.verify(delivered.raw, dnsfunc=_lab_dnsfunc(lab))
    _assert_no_secret(lab, result.output)
    assert "AUTH PLAIN <redacted>" in result.stderr


def test_wrong_password_fails_at_auth(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile(password="not-the-password")
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--json",
        "--profile", str(profile), *lab_args,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["failure"]["stage"] == "auth"
    assert report["failure"]["code"] == 535
    assert report["problem"].startswith("auth stage")
    assert "not-the-password" not in result.output
    assert [s["stage"] for s in report["stages"]][-2:] == ["auth", "quit"]


def test_no_starttls_is_refused_before_any_auth(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile("no_starttls")
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--json", "-v",
        "--profile", str(profile), *lab_args,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["failure"]["stage"] == "starttls"
    assert report["failure"]["kind"] == "no-starttls"
    assert "auth" not in [s["stage"] for s in report["stages"]]
    assert "C: AUTH" not in result.stderr and "C: MAIL" not in result.stderr
    _assert_no_secret(lab, result.output)


def test_smtps_and_human_output(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile("smtps", security="tls", dkim=False)
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--profile", str(profile), *lab_args
    )
    assert result.exit_code == 0, result.output
    assert "queue id:" in result.stdout and "OK" in result.stdout
    assert "DKIM-signed: no" in result.stdout


def test_untrusted_certificate_and_insecure(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile("untrusted")
    args = [
        "send-test",
        "support@good.test",
        "--to",
        RECIPIENT,
        "--json",
        "--profile",
        str(profile),
    ]
    refused = cli(*args, *lab_args)
    assert refused.exit_code == 1, refused.output
    assert json.loads(refused.stdout)["failure"]["certificate_problem"] == "untrusted-issuer"
    allowed = cli(*args, "--insecure", *lab_args)
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["insecure"] is True
    assert "INSECURE" in allowed.stderr


def test_closed_port_exits_3(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    from lab.proc import free_ports

    profile = write_profile()
    text = profile.read_text().replace(
        f"port = {lab.ports['submission']}", f"port = {free_ports(1)[0]}"
    )
    profile.write_text(text)
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--json",
        "--profile", str(profile), *lab_args,
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["failure"]["kind"] == "refused"


def test_header_injection_is_refused(
    cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    profile = write_profile()
    for extra in (
        ["--to", "bob@good.test\r\nBcc: x@evil.test"],
        ["--to", RECIPIENT, "--subject", "hi\nBcc: x@evil.test"],
    ):
        result = cli("send-test", "support@good.test", *extra, "--profile", str(profile), *lab_args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


def test_a_provider_reply_is_explained_with_its_cause_and_fix(
    lab: Lab, cli: CliInvoker, write_profile: Callable[..., Path], lab_args: list[str]
) -> None:
    # The lab's Postfix answers a sender its user may not send as with Microsoft 365's 5.7.60.
    profile = write_profile(address=SEND_AS_DENIED, dkim=False)
    args = ["send-test", SEND_AS_DENIED, "--to", RECIPIENT, "--profile", str(profile), *lab_args]
    result = cli(*args, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "550 5.7.60" in report["problem"]
    assert "may not send as this sender" in report["problem"]
    assert "Add-RecipientPermission" in report["fix"]
    shown = cli(*args)
    assert shown.exit_code == 1
    assert "fix: send as the mailbox itself" in shown.output
    _assert_no_secret(lab, result.output + shown.output)
