"""dkim.key judged from hand-built TXT answers: the classifier beside the selector lookup."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from smtpconn.checks.dkim_checks import classify_key
from smtpconn.checks.model import Status
from smtpconn.dns import DnsAnswer, DnsOutcome

NAME = "s1._domainkey.ex.test"
FIX = "publish: the key"


def txt(outcome: DnsOutcome, *records: str, error: str = "") -> DnsAnswer:
    return DnsAnswer(NAME, "TXT", outcome, records, error)


def ed25519_p() -> str:
    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def test_no_answer_no_record_or_several_records() -> None:
    down = classify_key(txt(DnsOutcome.ERROR, error="SERVFAIL"), NAME, FIX)
    assert down.result.status is Status.ERROR and down.key is None
    missing = classify_key(txt(DnsOutcome.NXDOMAIN), NAME, FIX)
    assert missing.result.status is Status.FAIL and missing.result.detail == "TXT nxdomain"
    assert missing.result.fix == FIX
    two = classify_key(txt(DnsOutcome.OK, "v=DKIM1; p=AAAA", "v=DKIM1; p=BBBB"), NAME, FIX)
    assert "holds 2 DKIM key records" in two.result.summary
    assert two.result.fix == "remove the other records and keep one: " + FIX
    other = classify_key(txt(DnsOutcome.OK, "v=spf1 -all"), NAME, FIX)
    assert "holds no DKIM key records" in other.result.summary and other.result.fix == FIX


def test_records_that_do_not_parse_or_are_revoked() -> None:
    cases = {
        "v=DKIM2; p=AAAA": "v=DKIM2 (must be DKIM1, and first)",
        "v=DKIM1; k=dsa; p=AAAA": "k=dsa is not a DKIM key type",
        "v=DKIM1; k=ed25519; p=c2hvcnQ=": "does not parse",
        "v=DKIM1; p=": "revoked (empty p=)",
    }
    for record, words in cases.items():
        found = classify_key(txt(DnsOutcome.OK, record), NAME, FIX)
        assert found.result.status is Status.FAIL and words in found.result.summary, record
        assert found.record == record and found.key is None and found.result.fix == FIX


def test_a_key_passes_and_testing_mode_warns_keeping_other_flags() -> None:
    p = ed25519_p()
    good = classify_key(txt(DnsOutcome.OK, f"v=DKIM1; k=ed25519; p={p}"), NAME, FIX)
    assert good.result.status is Status.PASS and good.key is not None and not good.testing
    assert good.result.summary == f"{NAME}: ed25519 key published"
    testing = classify_key(txt(DnsOutcome.OK, f"v=DKIM1; k=ed25519; t=y:s; p={p}"), NAME, FIX)
    assert testing.result.status is Status.WARN and testing.testing
    assert f"v=DKIM1; t=s; k=ed25519; p={p}" in testing.result.fix.replace('" "', "")
