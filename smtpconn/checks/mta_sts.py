"""The ``mta-sts`` and ``tls-rpt`` checks: the DNS halves of MTA-STS (RFC 8461 §3.1) and SMTP TLS
reporting (RFC 8460 §3). Both protect mail *to* the support address's domain; missing is a
warning (they are opt-in hardening), malformed is a failure (receivers ignore a broken record).

``mta-sts.policy`` fetches the policy the record announces
(https://mta-sts.<domain>/.well-known/mta-sts.txt, sts_fetch.py) and judges it against the
domain's MX hosts (sts_policy.py).
"""

from __future__ import annotations

import asyncio
import re

from smtpconn.checks import catalogue
from smtpconn.checks.common import could_not_tell
from smtpconn.checks.dns_checks import parse_mx
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.records import txt_record
from smtpconn.checks.sts_fetch import fetch_policy
from smtpconn.checks.sts_policy import judge_policy
from smtpconn.dns import DnsOutcome
from smtpconn.dns.tags import parse_tags
from smtpconn.profile.model import SupportAddress

IDS = catalogue.MTA_STS
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")


async def _the_one_record(
    ctx: CheckContext, check_id: str, name: str, version: str, label: str, missing: str, fresh: str
) -> str | CheckResult:
    """The single ``version`` TXT record at ``name``, or the result that says why there is not
    exactly one (both records follow the same one-record rule)."""
    answer = await ctx.resolver.query(name, "TXT")
    if answer.outcome.value == "error":
        return could_not_tell(check_id, f"TXT of {name}", [answer.error])
    records = [r for r in answer.records if r.startswith(version)]
    if not records:
        return CheckResult(
            check_id, Status.WARN, f"no {label} record at {name}: {missing}", fix=fresh
        )
    if len(records) > 1:
        return CheckResult(
            check_id,
            Status.FAIL,
            f"{name} has {len(records)} {label} records (must be one)",
            detail=" | ".join(records),
            fix=f"keep exactly one: {txt_record(name, records[0])}",
        )
    return records[0]


async def check_mta_sts(ctx: CheckContext, domain: str) -> CheckResult:
    name = f"_mta-sts.{domain}"
    fresh = (
        f"publish: {txt_record(name, 'v=STSv1; id=20240101000000')} and serve the policy at "
        f"https://mta-sts.{domain}/.well-known/mta-sts.txt (change id= whenever the policy changes)"
    )
    record = await _the_one_record(
        ctx, "mta-sts", name, "v=STSv1", "MTA-STS",
        f"senders may deliver to {domain} without TLS", fresh,
    )  # fmt: skip
    if isinstance(record, CheckResult):
        return record
    sts_id = parse_tags(record).get("id", "")
    if not _STS_ID.fullmatch(sts_id):
        return CheckResult(
            "mta-sts",
            Status.FAIL,
            f"the MTA-STS record at {name} has no valid id= (1-32 letters/digits)",
            detail=record,
            fix=fresh,
        )
    return CheckResult("mta-sts", Status.PASS, f"MTA-STS record at {name} (id={sts_id})", record)


async def check_tls_rpt(ctx: CheckContext, domain: str) -> CheckResult:
    name = f"_smtp._tls.{domain}"
    fresh = f"publish: {txt_record(name, f'v=TLSRPTv1; rua=mailto:tlsrpt@{domain}')}"
    record = await _the_one_record(
        ctx, "tls-rpt", name, "v=TLSRPTv1", "TLS-RPT", "nobody reports TLS failures to you", fresh
    )
    if isinstance(record, CheckResult):
        return record
    rua = parse_tags(record).get("rua", "")
    if not rua or not all(u.startswith(("mailto:", "https:")) for u in rua.split(",")):
        return CheckResult(
            "tls-rpt",
            Status.FAIL,
            f"the TLS-RPT record at {name} has no valid rua= (mailto: or https:)",
            detail=record,
            fix=fresh,
        )
    return CheckResult("tls-rpt", Status.PASS, f"TLS-RPT reports go to {rua}", record)


async def check_mta_sts_policy(ctx: CheckContext, domain: str, record: CheckResult) -> CheckResult:
    """The policy, judged only when the TXT record announces one with a valid id (without it
    senders never fetch the policy)."""
    if record.status is not Status.PASS:
        return CheckResult(
            "mta-sts.policy",
            Status.SKIP,
            f"skipped: no valid MTA-STS record at _mta-sts.{domain}, so senders never fetch "
            "the policy",
            fix=record.fix or "fix the mta-sts check first",
        )
    mx, fetched = await asyncio.gather(ctx.resolver.query(domain, "MX"), fetch_policy(ctx, domain))
    if mx.outcome is DnsOutcome.ERROR:
        return could_not_tell("mta-sts.policy", f"MX of {domain}", [mx.error])
    hosts = [h for _, h in parse_mx(mx.records) if h not in ("", ".")]
    return judge_policy(fetched, hosts)


async def run_mta_sts(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    domain = entry.address.domain
    record, rpt = await asyncio.gather(check_mta_sts(ctx, domain), check_tls_rpt(ctx, domain))
    return [record, await check_mta_sts_policy(ctx, domain, record), rpt]
