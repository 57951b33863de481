"""mta-sts and tls-rpt: one record each; missing warns, broken or doubled fails, DNS trouble is
"could not tell"."""

from __future__ import annotations

import pytest

from smtpconn.checks.model import Status
from smtpconn.checks.mta_sts import check_mta_sts, check_tls_rpt
from tests.unit.checks.fakedns import FakeResolver, context

STS = "_mta-sts.ex.test"
RPT = "_smtp._tls.ex.test"


@pytest.mark.parametrize(
    ("records", "status", "in_summary"),
    [
        (["v=STSv1; id=2024a"], Status.PASS, "id=2024a"),
        ([], Status.WARN, "no MTA-STS record"),
        (["v=STSv1; id=1", "v=STSv1; id=2"], Status.FAIL, "2 MTA-STS records"),
        (["v=STSv1; id=not-valid!"], Status.FAIL, "no valid id="),
        (["unrelated text"], Status.WARN, "no MTA-STS record"),
    ],
)
async def test_mta_sts(records: list[str], status: Status, in_summary: str) -> None:
    fake = FakeResolver({(STS, "TXT"): records} if records else {("ex.test", "A"): ["192.0.2.1"]})
    result = await check_mta_sts(context(fake), "ex.test")
    assert result.status is status and in_summary in result.summary
    if status is not Status.PASS:
        assert result.fix


@pytest.mark.parametrize(
    ("records", "status", "in_summary"),
    [
        (["v=TLSRPTv1; rua=mailto:tls@ex.test"], Status.PASS, "mailto:tls@ex.test"),
        ([], Status.WARN, "no TLS-RPT record"),
        (
            ["v=TLSRPTv1; rua=mailto:a@ex.test", "v=TLSRPTv1; rua=mailto:b@ex.test"],
            Status.FAIL,
            "2 TLS-RPT",
        ),
        (["v=TLSRPTv1; rua=ftp://x"], Status.FAIL, "no valid rua="),
        (["v=TLSRPTv1;"], Status.FAIL, "no valid rua="),
    ],
)
async def test_tls_rpt(records: list[str], status: Status, in_summary: str) -> None:
    fake = FakeResolver({(RPT, "TXT"): records} if records else {("ex.test", "A"): ["192.0.2.1"]})
    result = await check_tls_rpt(context(fake), "ex.test")
    assert result.status is status and in_summary in result.summary
    if status is not Status.PASS:
        assert result.fix


async def test_dns_trouble_is_could_not_tell() -> None:
    fake = FakeResolver({}, broken={STS, RPT})
    for check in (check_mta_sts, check_tls_rpt):
        assert (await check(context(fake), "ex.test")).status is Status.ERROR
