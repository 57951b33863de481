"""Merging the verdicts of a pool's addresses (hand-built results, no sockets)."""

from __future__ import annotations

from smtpconn.checks.model import CheckResult, Status
from smtpconn.checks.tls_auth.pool import merge


def results(*statuses: Status) -> list[CheckResult]:
    ids = ("tls.connect", "tls.certificate", "auth.login")
    return [
        CheckResult(i, s, f"{i} {s.value}", "evidence", "" if s is Status.PASS else f"fix {i}")
        for i, s in zip(ids, statuses, strict=True)
    ]


def test_agreeing_addresses_give_the_plain_results_and_say_so() -> None:
    ok = results(Status.PASS, Status.PASS, Status.PASS)
    merged = merge([("192.0.2.1", ok), ("192.0.2.2", ok)])
    assert [r.summary for r in merged] == [r.summary for r in ok]
    assert all("same on all 2 addresses" in r.detail for r in merged)


def test_a_single_address_is_unchanged() -> None:
    ok = results(Status.PASS, Status.WARN, Status.PASS)
    assert merge([("192.0.2.1", ok)]) == ok


def test_differing_addresses_take_the_worst_and_name_it() -> None:
    good = results(Status.PASS, Status.PASS, Status.PASS)
    bad = results(Status.PASS, Status.FAIL, Status.SKIP)
    connect, certificate, login = merge([("192.0.2.1", good), ("192.0.2.2", bad)])
    assert connect.status is Status.PASS and "differ" not in connect.summary
    assert certificate.status is Status.FAIL
    assert certificate.summary.startswith("192.0.2.2: tls.certificate fail")
    assert "192.0.2.1 pass, 192.0.2.2 fail" in certificate.summary
    assert certificate.fix == "on the node at 192.0.2.2 (the others differ): fix tls.certificate"
    assert login.status is Status.SKIP and "192.0.2.1 pass, 192.0.2.2 skip" in login.summary


def test_unreachable_addresses_are_noted_not_judged() -> None:
    ok = results(Status.PASS, Status.PASS, Status.PASS)
    merged = merge([("192.0.2.1", ok)], unreachable=["2001:db8::1"])
    assert all(r.status is Status.PASS for r in merged)
    assert all("no route from here): 2001:db8::1" in r.detail for r in merged)
