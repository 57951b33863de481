"""Every address of the outbound server: the lab's pool.good.test has two A records, and
Postfix's ``pool`` port serves a good certificate on 127.0.0.1 and an expired one on 127.0.0.2
(lab/postfix.py). Each address gets its own session; their verdicts differ, so verify says so."""

from __future__ import annotations

import pytest

from lab import zones
from lab.lab import Lab
from smtpconn.checks.model import Status
from tests.integration.tls_auth.test_tls_auth import SECRET_ENV, _entry, _run


@pytest.fixture(autouse=True)
def _secret(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, lab.user.password)


async def test_a_node_with_an_expired_certificate_fails_naming_its_address(lab: Lab) -> None:
    results, transcript = await _run(lab, _entry(lab, "pool", host=zones.POOL_HOST))
    good, bad = zones.POOL_ADDRS
    certificate = results["tls.certificate"]
    assert certificate.status is Status.FAIL, certificate
    assert certificate.summary.startswith(f"{bad}: ") and "expired" in certificate.summary
    assert f"{good} pass, {bad} fail" in certificate.summary
    assert certificate.fix.startswith(f"on the node at {bad}")
    assert results["tls.expiry"].status is Status.FAIL
    # Where the nodes agree, the result is plain and says so.
    assert results["tls.connect"].status is Status.PASS
    assert "same on all 2 addresses" not in results["tls.connect"].detail
    assert "differ" not in results["tls.connect"].summary
    # The good node took the password; the other was never trusted with it.
    login = results["auth.login"]
    assert login.status is Status.SKIP and f"{good} pass" in login.summary
    # Two sessions, one per address, each from its own connect.
    connects = [line for line in transcript if "connect" in line.lower()]
    assert any(good in line for line in connects) and any(bad in line for line in connects), (
        transcript[:10]
    )


async def test_a_node_that_refuses_connections_is_not_hidden_by_the_other(lab: Lab) -> None:
    """The submission port listens on 127.0.0.1 only: the pool's second node is down (a refused
    connection is "could not tell" for that node), which used to pass on the first node."""
    results, _ = await _run(lab, _entry(lab, "submission", host=zones.POOL_HOST))
    connect = results["tls.connect"]
    assert connect.status is Status.ERROR, connect
    assert "127.0.0.1 pass, 127.0.0.2 error" in connect.summary
    assert connect.summary.startswith(f"{zones.POOL_ADDRS[1]}: ")
    assert results["auth.login"].summary.startswith(f"{zones.POOL_ADDRS[1]}: ")


async def test_a_single_address_server_is_judged_as_before(lab: Lab) -> None:
    results, _ = await _run(lab, _entry(lab, "submission"))
    # auth.token skips: the lab user logs in with a password, not an OAuth token
    judged = {i: r for i, r in results.items() if i != "auth.token"}
    assert all(r.status is Status.PASS for r in judged.values()), results
    assert results["auth.token"].status is Status.SKIP
    assert not any("differ" in r.summary for r in results.values())
