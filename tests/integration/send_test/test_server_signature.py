"""send-test's check of the signature the customer's server adds (``--dkim-selector`` without
``--dkim-key``): the copy that came back must carry a DKIM signature with d= the support
address's domain and s= that selector, verified against the lab's NSD, wherever it sits among
the message's signatures."""

from __future__ import annotations

from lab.lab import Lab
from smtpconn.dns.resolvers import parse_resolver
from smtpconn.sendtest.received import verify_dkim
from smtpconn.settings import Settings
from smtpconn.smtp.dkim import DkimKey, dkim_sign

MESSAGE = (
    b"From: support@good.test\r\nTo: help@helpdesk.test\r\nSubject: server-signed\r\n"
    b"Date: Mon, 30 Nov 2026 00:00:00 +0000\r\nMessage-ID: <t1@good.test>\r\n\r\nhello\r\n"
)


def _settings(lab: Lab) -> Settings:
    return Settings(resolvers=(parse_resolver(lab.resolver),), timeout=5)


def _signed(lab: Lab, domain: str, selector: str, raw: bytes = MESSAGE) -> bytes:
    key = lab.dkim_keys["main"].path.read_bytes()
    return dkim_sign(raw, DkimKey(domain, selector, key))


def test_the_servers_signature_is_found_and_verified_below_another(lab: Lab) -> None:
    # The server's signature first, then a second one on top (e.g. a gateway's): the check
    # must find d=good.test s=sel2048 at index 1, not judge the first one.
    raw = _signed(lab, "splittxt.test", "sel2048", _signed(lab, "good.test", "sel2048"))
    got = verify_dkim(raw, _settings(lab), ("good.test", "sel2048"))
    assert got["result"] == "pass", got


def test_missing_selector_is_none_and_names_what_was_found(lab: Lab) -> None:
    raw = _signed(lab, "good.test", "sel2048")
    got = verify_dkim(raw, _settings(lab), ("good.test", "selector1"))
    assert got["result"] == "none"
    assert "d=good.test s=selector1" in got["detail"] and "s=sel2048" in got["detail"]


def test_altered_body_fails(lab: Lab) -> None:
    raw = _signed(lab, "good.test", "sel2048").replace(b"hello", b"HELLO")
    got = verify_dkim(raw, _settings(lab), ("good.test", "sel2048"))
    assert got["result"] == "fail"


def test_key_that_does_not_match_the_record_fails(lab: Lab) -> None:
    # dkimmismatch.test publishes key "other" at sel2048; a signature made with "main" fails.
    raw = _signed(lab, "dkimmismatch.test", "sel2048")
    got = verify_dkim(raw, _settings(lab), ("dkimmismatch.test", "sel2048"))
    assert got["result"] == "fail"
