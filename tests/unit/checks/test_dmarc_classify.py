"""dmarc.record judged from hand-built TXT answers: the classifier beside the tree walk."""

from __future__ import annotations

from smtpconn.checks.dmarc import classify_dmarc
from smtpconn.checks.model import Status


def test_txt_without_a_dmarc_record_lets_the_walk_go_on() -> None:
    assert classify_dmarc("ex.test", "ex.test", ()) is None
    assert classify_dmarc("ex.test", "ex.test", ("v=spf1 -all", "hello")) is None


def test_a_valid_record_at_the_organisational_domain_passes() -> None:
    found = classify_dmarc("help.ex.test", "ex.test", ("v=DMARC1; p=Reject; sp=none",))
    assert found is not None and found.result.status is Status.PASS
    assert found.at == "ex.test" and found.inherited
    assert found.tags["p"] == "reject" and found.record == "v=DMARC1; p=Reject; sp=none"
    assert "organisational domain of help.ex.test" in found.result.summary


def test_several_records_fail_and_keep_the_strongest() -> None:
    found = classify_dmarc("ex.test", "ex.test", ("v=DMARC1; p=none", "v=DMARC1; p=reject"))
    assert found is not None and found.result.status is Status.FAIL and found.record is None
    assert "has 2 DMARC records" in found.result.summary
    assert found.result.fix.startswith('delete "v=DMARC1; p=none" and keep exactly one')
    assert "p=reject" in found.result.fix


def test_glued_tags_and_invalid_values_are_repaired() -> None:
    found = classify_dmarc("ex.test", "ex.test", ("v=DMARC1 p=block; aspf=x",))
    assert found is not None and found.result.status is Status.FAIL and found.record is None
    assert found.result.summary.endswith("a ';' missing between tags and invalid p=block, aspf=x")
    assert "p=quarantine" in found.result.fix and "aspf" not in found.result.fix


def test_a_record_without_a_policy_gets_quarantine() -> None:
    found = classify_dmarc("ex.test", "ex.test", ("v=DMARC1; rua=mailto:r@ex.test",))
    assert found is not None and found.result.summary.endswith("has no p= tag")
    assert "v=DMARC1; p=quarantine; rua=mailto:r@ex.test" in found.result.fix
