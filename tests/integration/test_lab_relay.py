"""The lab Postfix's relay transport (the bidirectional mode's inbound leg): mail for a relay
domain goes to a test-chosen host:port, only over TLS and only with SMTP AUTH."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from lab import zones
from lab.lab import Lab
from lab.proc import free_ports
from lab.sink import SmtpSink
from lab.swaks import send

# aiosmtpd warns about AUTH without *its* TLS requirement: deliberate in the no-TLS sink, and
# spurious for implicit TLS (the session is encrypted from the first byte).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

HD_USER, HD_PASS = "helpdesk-inbound", "inbound-secret"


def token() -> str:
    return f"relay-{uuid.uuid4().hex}"


def send_inbound(lab: Lab, to: str, subject: str) -> str:
    """A message from the outside world to the customer's server (MX port, no AUTH)."""
    res = lab.send("mx", tls="starttls", to=to, sender="customer@example.org", subject=subject)
    assert res.ok, res.transcript
    assert res.queue_id
    return res.queue_id


def test_relays_only_after_auth_over_tls(
    lab: Lab, smtp_sink: Callable[..., SmtpSink], relay_domain: str
) -> None:
    sink = smtp_sink(users={HD_USER: HD_PASS})
    lab.set_relay_target(relay_domain, sink.host, sink.port, HD_USER, HD_PASS)
    t = token()
    send_inbound(lab, f"support@{relay_domain}", t)
    msg = sink.wait_for_message(t)
    assert msg.tls and msg.auth_login == HD_USER
    assert msg.rcpt_tos == (f"support@{relay_domain}",)
    assert sink.auth_attempts and all(a.over_tls and a.success for a in sink.auth_attempts)


def test_verified_tls_against_lab_ca(
    lab: Lab, smtp_sink: Callable[..., SmtpSink], relay_domain: str
) -> None:
    sink = smtp_sink(users={HD_USER: HD_PASS})
    lab.set_relay_target(
        relay_domain, sink.host, sink.port, HD_USER, HD_PASS, tls="secure", match=zones.RELAY_HOST
    )
    t = token()
    pos = lab.postfix.log_position() if lab.postfix else 0
    send_inbound(lab, f"support@{relay_domain}", t)
    sink.wait_for_message(t)
    assert lab.postfix is not None
    lab.postfix.wait_for_log(r"Verified TLS connection established to 127\.0\.0\.1", since=pos)


def test_never_sends_auth_or_mail_without_tls(
    lab: Lab, smtp_sink: Callable[..., SmtpSink], relay_domain: str
) -> None:
    sink = smtp_sink(users={HD_USER: HD_PASS}, tls=False)  # offers AUTH, no STARTTLS
    lab.set_relay_target(relay_domain, sink.host, sink.port, HD_USER, HD_PASS)
    assert lab.postfix is not None
    pos = lab.postfix.log_position()
    qid = send_inbound(lab, f"support@{relay_domain}", token())
    lab.postfix.wait_for_log(
        rf"{qid}: .*status=deferred .*TLS is required, but was not offered", since=pos
    )
    assert sink.messages == [] and sink.auth_attempts == []


def test_wrong_credentials_defer(
    lab: Lab, smtp_sink: Callable[..., SmtpSink], relay_domain: str
) -> None:
    sink = smtp_sink(users={HD_USER: "a-different-password"})
    lab.set_relay_target(relay_domain, sink.host, sink.port, HD_USER, HD_PASS)
    assert lab.postfix is not None
    pos = lab.postfix.log_position()
    qid = send_inbound(lab, f"support@{relay_domain}", token())
    lab.postfix.wait_for_log(rf"{qid}: .*status=deferred .*SASL authentication failed", since=pos)
    assert sink.messages == []
    assert sink.auth_attempts and all(a.over_tls and not a.success for a in sink.auth_attempts)


def test_target_coming_back_gets_the_mail_within_seconds(
    lab: Lab, smtp_sink: Callable[..., SmtpSink], relay_domain: str
) -> None:
    [port] = free_ports(1)
    lab.set_relay_target(relay_domain, "127.0.0.1", port, HD_USER, HD_PASS)
    assert lab.postfix is not None
    pos = lab.postfix.log_position()
    t = token()
    qid = send_inbound(lab, f"support@{relay_domain}", t)
    lab.postfix.wait_for_log(rf"{qid}: .*status=deferred .*Connection refused", since=pos)
    sink = smtp_sink(users={HD_USER: HD_PASS}, port=port)
    # No flush: the short retry settings alone must bring it (flush() exists for impatience).
    msg = sink.wait_for_message(t, timeout=15)
    assert msg.tls and msg.auth_login == HD_USER


def test_default_relay_domain_tempfails_until_target_set(
    lab: Lab, smtp_sink: Callable[..., SmtpSink]
) -> None:
    to = f"support-{uuid.uuid4().hex[:6]}@{zones.RELAY_DOMAIN}"
    res = lab.send("mx", tls="starttls", to=to, sender="customer@example.org")
    assert not res.ok
    assert "450 4.4.1" in res.transcript and "no relay target set" in res.transcript
    sink = smtp_sink(users={HD_USER: HD_PASS})
    try:
        lab.set_relay_target(zones.RELAY_DOMAIN, sink.host, sink.port, HD_USER, HD_PASS)
        t = token()
        send_inbound(lab, to, t)
        sink.wait_for_message(t)
    finally:
        lab.clear_relay_target(zones.RELAY_DOMAIN)


def test_retargeting_applies_to_the_next_message(
    lab: Lab, smtp_sink: Callable[..., SmtpSink], relay_domain: str
) -> None:
    first = smtp_sink(users={HD_USER: HD_PASS})
    second = smtp_sink(users={HD_USER: HD_PASS})
    lab.set_relay_target(relay_domain, first.host, first.port, HD_USER, HD_PASS)
    t1 = token()
    send_inbound(lab, f"a@{relay_domain}", t1)
    first.wait_for_message(t1)
    lab.set_relay_target(relay_domain, second.host, second.port, HD_USER, HD_PASS)
    t2 = token()
    send_inbound(lab, f"b@{relay_domain}", t2)
    second.wait_for_message(t2)
    assert all(t2.encode() not in m.content for m in first.messages)


def test_sink_speaks_implicit_tls_too(lab: Lab, smtp_sink: Callable[..., SmtpSink]) -> None:
    """The throw-away listener itself, driven by swaks: RFC 8314 TLS + AUTH, chain verified."""
    sink = smtp_sink(users={HD_USER: HD_PASS}, implicit_tls=True)
    t = token()
    res = send(
        sink.port,
        tls="implicit",
        ca_file=str(lab.ca_file),
        auth=(HD_USER, HD_PASS),
        to="support@helpdesk.test",
        subject=t,
    )
    assert res.ok, res.transcript
    msg = sink.wait_for_message(t)
    assert msg.tls and msg.auth_login == HD_USER
