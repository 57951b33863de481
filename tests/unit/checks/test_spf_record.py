"""spf.record judged from hand-built TXT answers: the classifier beside the lookup."""

from __future__ import annotations

from smtpconn.checks.model import Status
from smtpconn.checks.spf import classify_spf
from smtpconn.dns import DnsAnswer, DnsOutcome

FRESH = "v=spf1 a:mail.ex.test -all"


def txt(outcome: DnsOutcome, *records: str, error: str = "") -> DnsAnswer:
    return DnsAnswer("ex.test", "TXT", outcome, records, error)


def test_one_valid_record_passes_with_its_parse() -> None:
    found = classify_spf("ex.test", txt(DnsOutcome.OK, "google-site=x", FRESH), FRESH)
    assert found.result.status is Status.PASS and found.result.detail == FRESH
    assert found.record is not None and found.record.text == FRESH


def test_no_answer_or_no_record() -> None:
    down = classify_spf("ex.test", txt(DnsOutcome.ERROR, error="timeout"), FRESH)
    assert down.result.status is Status.ERROR and down.record is None
    none = classify_spf("ex.test", txt(DnsOutcome.OK, "hello"), FRESH)
    assert none.result.status is Status.FAIL and none.record is None
    assert none.result.detail == "TXT ok: hello"
    assert none.result.fix == f'publish: ex.test. TXT "{FRESH}"'


def test_several_records_are_merged_into_one() -> None:
    found = classify_spf("ex.test", txt(DnsOutcome.OK, "v=spf1 mx -all", "v=spf1 a ~all"), FRESH)
    assert found.result.status is Status.FAIL and found.record is None
    assert "publishes 2 SPF records" in found.result.summary
    assert "merge into: v=spf1 mx a -all " in found.result.fix


def test_a_syntax_error_offers_the_correction_and_the_record_without_it() -> None:
    found = classify_spf("ex.test", txt(DnsOutcome.OK, "v=spf1 inlcude:x.test -all"), FRESH)
    assert found.result.status is Status.FAIL and found.record is None
    assert found.result.summary == "SPF syntax error (permerror) in 'inlcude:x.test'"
    assert found.result.fix == (
        "replace the record with: v=spf1 include:x.test -all"
        " or, remove the offending term(s): v=spf1 -all"
    )


def test_ptr_warns_and_the_fix_replaces_it_with_the_server_address() -> None:
    from smtpconn.checks.spf import judge_ptr
    from tests.unit.checks.test_blocklist import entry

    record = "v=spf1 ptr:ex.test mx -all"
    found = classify_spf("ex.test", txt(DnsOutcome.OK, record), FRESH)
    warned = judge_ptr(found, entry(), ("192.0.2.7",))
    assert warned.result.status is Status.WARN and "RFC 7208 §5.5" in warned.result.summary
    assert warned.result.fix.endswith('ex.test. TXT "v=spf1 mx ip4:192.0.2.7 -all"')
    clean = classify_spf("ex.test", txt(DnsOutcome.OK, FRESH), FRESH)
    assert judge_ptr(clean, entry(), ("192.0.2.7",)) == clean
