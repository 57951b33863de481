"""Each of the lab Postfix's listeners behaves as documented in lab/postfix.py (proved with swaks
and openssl s_client, both independent of smtpconn)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import uuid

import pytest
from cryptography import x509

from lab import zones
from lab.lab import Lab
from lab.swaks import SwaksResult, openssl_verify, send, swaks


def token() -> str:
    return f"lab-{uuid.uuid4().hex}"


def ehlo_lines(res: SwaksResult, after_tls: bool) -> list[str]:
    """The EHLO response lines swaks printed before ("<-") or after ("<~") TLS."""
    prefix = "<~" if after_tls else "<-"
    return [
        line[3:].strip()
        for line in res.transcript.splitlines()
        if line.startswith(prefix + "  250")
    ]


def auth_offered(lines: list[str]) -> bool:
    return any(line[4:].upper().startswith("AUTH") for line in lines)


def starttls_offered(lines: list[str]) -> bool:
    return any(line[4:].upper().startswith("STARTTLS") for line in lines)


# -- the good listeners --------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_auth_after_starttls_delivers(lab: Lab, mechanism: str) -> None:
    t = token()
    res = lab.send(
        "submission",
        tls="starttls",
        ca_file=str(lab.ca_file),
        auth=(lab.user.username, lab.user.password),
        mechanism=mechanism,
        sender="support@good.test",
        to=lab.user.address,
        subject=t,
    )
    assert res.ok, res.transcript
    assert "TLS started" in res.transcript
    assert auth_offered(ehlo_lines(res, after_tls=True))
    msg = lab.find_message(t, address=lab.user.address)
    assert msg.message["Subject"] == t
    # Postfix recorded that it came in authenticated and over TLS.
    assert "Authenticated sender" in msg.message.get_all("Received", [""])[0]
    assert "TLS" in msg.message.get_all("Received", [""])[0]


def test_submission_refuses_auth_and_mail_before_starttls(lab: Lab) -> None:
    res = lab.send("submission", tls=None, auth=(lab.user.username, lab.user.password))
    assert not res.ok
    before = ehlo_lines(res, after_tls=False)
    assert starttls_offered(before) and not auth_offered(before)
    # Without AUTH, plain MAIL FROM is refused until STARTTLS.
    res = lab.send("submission", tls=None)
    assert not res.ok
    assert "530 5.7.0 Must issue a STARTTLS command first" in res.transcript


def test_submission_refuses_wrong_password(lab: Lab) -> None:
    res = lab.send("submission", tls="starttls", auth=(lab.user.username, "wrong-password"))
    assert not res.ok
    assert "535 5.7.8" in res.transcript


def test_submission_requires_auth_to_send(lab: Lab) -> None:
    res = lab.send("submission", tls="starttls", to=lab.user.address)
    assert not res.ok
    assert "Relay access denied" in res.transcript or "5.7.1" in res.transcript


def test_smtps_implicit_tls_with_auth_delivers(lab: Lab) -> None:
    t = token()
    res = lab.send(
        "smtps",
        tls="implicit",
        ca_file=str(lab.ca_file),
        auth=(lab.user.username, lab.user.password),
        to="support@nospf.test",
        sender="support@good.test",
        subject=t,
    )
    assert res.ok, res.transcript
    msg = lab.find_message(t, address="support@nospf.test")
    assert msg.path.parts[-4:-2] == ("nospf.test", "support")


def test_users_can_send_as_any_lab_support_address(lab: Lab) -> None:
    t = token()
    res = lab.send(
        "submission",
        tls="starttls",
        auth=(lab.user.username, lab.user.password),
        sender="support@dkim1024.test",
        to="random-person@good.test",
        subject=t,
    )
    assert res.ok, res.transcript
    msg = lab.find_message(t, address="random-person@good.test")  # catch-all Maildir
    assert msg.message["From"] == "support@dkim1024.test"


def test_mx_accepts_lab_mail_without_auth_but_does_not_relay(lab: Lab) -> None:
    t = token()
    res = lab.send(
        "mx",
        tls="starttls",
        ca_file=str(lab.ca_file),
        to="support@good.test",
        sender="someone@example.org",
        subject=t,
    )
    assert res.ok, res.transcript
    assert not auth_offered(ehlo_lines(res, after_tls=False))
    assert not auth_offered(ehlo_lines(res, after_tls=True))
    assert starttls_offered(ehlo_lines(res, after_tls=False))
    lab.find_message(t, address="support@good.test")
    # Not an open relay.
    res = lab.send("mx", tls="starttls", to="someone@example.org", sender="support@good.test")
    assert not res.ok
    assert "Relay access denied" in res.transcript


def test_server_cert_verifies_for_its_name_and_address(lab: Lab) -> None:
    for port in ("submission", "mx"):
        res = openssl_verify(lab.ports[port], str(lab.ca_file), zones.MAIL_HOST)
        assert res.ok, res.transcript
    res = openssl_verify(lab.ports["smtps"], str(lab.ca_file), zones.MAIL_HOST, starttls=False)
    assert res.ok, res.transcript
    # Python's ssl agrees (also checks the IP SAN when connecting by address).
    ctx = ssl.create_default_context(cafile=str(lab.ca_file))
    with (
        socket.create_connection(("127.0.0.1", lab.ports["smtps"]), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


# -- the bad listeners ---------------------------------------------------------------------


def test_no_starttls_port_refuses_tls_and_offers_auth_in_clear(lab: Lab) -> None:
    res = lab.send("no_starttls", tls="starttls")
    assert not res.ok
    before = ehlo_lines(res, after_tls=False)
    assert before and not starttls_offered(before)
    assert auth_offered(before)
    # ... and AUTH in clear text actually works there (that is the finding).
    t = token()
    res = lab.send(
        "no_starttls",
        tls=None,
        auth=(lab.user.username, lab.user.password),
        to=lab.user.address,
        subject=t,
    )
    assert res.ok, res.transcript
    lab.find_message(t, address=lab.user.address)
    # A raw STARTTLS command is refused too.
    res = swaks(
        "--server", f"127.0.0.1:{lab.ports['no_starttls']}", "--quit-after", "EHLO", "--tls"
    )
    assert not res.ok


def test_auth_before_tls_port_offers_both_in_clear(lab: Lab) -> None:
    res = lab.send("auth_before_tls", tls=None, auth=(lab.user.username, lab.user.password))
    assert res.ok, res.transcript
    before = ehlo_lines(res, after_tls=False)
    assert starttls_offered(before) and auth_offered(before)
    assert "TLS started" not in res.transcript


@pytest.mark.parametrize("port", ["expired", "untrusted"])
def test_bad_chain_fails_verification_but_connects_without_it(lab: Lab, port: str) -> None:
    res = send(
        lab.ports[port],
        tls="starttls",
        ca_file=str(lab.ca_file),
        auth=(lab.user.username, lab.user.password),
    )
    assert not res.ok
    assert "TLS started" not in res.transcript
    good = send(
        lab.ports["submission"],
        tls="starttls",
        ca_file=str(lab.ca_file),
        extra=["--quit-after", "TLS"],
    )
    assert good.ok, good.transcript
    # Without verification the handshake itself works: the certificate is the only defect.
    res = send(lab.ports[port], tls="starttls", extra=["--quit-after", "TLS"])
    assert res.ok, res.transcript
    reason = openssl_verify(lab.ports[port], str(lab.ca_file), zones.MAIL_HOST)
    assert not reason.ok
    expected = "certificate has expired" if port == "expired" else "unable to get local issuer"
    assert expected in reason.transcript


def test_untrusted_cert_is_fine_against_its_own_ca(lab: Lab) -> None:
    assert lab.ca is not None
    res = openssl_verify(lab.ports["untrusted"], str(lab.ca.untrusted_ca_cert), zones.MAIL_HOST)
    assert res.ok, res.transcript


def test_wrong_host_cert_fails_name_check_only(lab: Lab) -> None:
    res = openssl_verify(lab.ports["wrong_host"], str(lab.ca_file), zones.MAIL_HOST)
    assert not res.ok
    assert "hostname mismatch" in res.transcript
    # The chain itself is fine (swaks 20201014 checks the chain but not the name).
    ok = send(
        lab.ports["wrong_host"],
        tls="starttls",
        ca_file=str(lab.ca_file),
        extra=["--quit-after", "TLS"],
    )
    assert ok.ok, ok.transcript


def test_expiring_cert_verifies_but_expires_within_21_days(lab: Lab) -> None:
    res = openssl_verify(lab.ports["expiring"], str(lab.ca_file), zones.MAIL_HOST)
    assert res.ok, res.transcript
    assert lab.ca is not None
    cert = x509.load_pem_x509_certificate(lab.ca.expiring.cert.read_bytes())
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=5) < left < dt.timedelta(days=21)
