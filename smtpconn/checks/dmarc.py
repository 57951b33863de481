"""The ``dmarc`` family: ``dmarc.record`` (found by the DMARCbis DNS tree walk), ``dmarc.policy``
(``p=none`` only monitors) and ``dmarc.alignment`` (the mail the connector sends passes DMARC:
SPF or DKIM passes for an identifier aligned with the From domain).

The tree walk (RFC 9989 §4.10) is :mod:`smtpconn.dns.dmarc_tree`, shared with the relay; this
module judges what it found. A record found above the address's own domain is the organisational
domain's, whose ``sp=`` (else ``p=``) applies.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass

from smtpconn.checks import catalogue
from smtpconn.checks.common import NO_SERVER_FIX, could_not_tell, no_server_reason, skipped
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.records import txt_record
from smtpconn.dns.dmarc_tree import find_policy, is_dmarc, walk_names
from smtpconn.dns.tags import parse_tags
from smtpconn.profile.model import SupportAddress

IDS = catalogue.DMARC
_POLICIES = ("none", "quarantine", "reject")


_GLUED = re.compile(r"\s+(?=[A-Za-z]+\s*=)")


def separated(record: str) -> str:
    """``record`` with the ``;`` put back where a tag follows another without one
    (``v=DMARC1 p=reject`` -> ``v=DMARC1; p=reject``), parts joined with ``"; "``."""
    parts = [p.strip() for p in record.split(";") if p.strip()]
    return "; ".join(q for p in parts for q in _GLUED.sub(";", p).split(";"))


def _strongest(records: list[str]) -> str:
    rank = {p: n for n, p in enumerate(_POLICIES)}
    return max(records, key=lambda r: rank.get(parse_tags(separated(r)).get("p", "").lower(), -1))


def starter(domain: str) -> str:
    return f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}"


def with_tag(record: str, tag: str, value: str) -> str:
    """``record`` with ``tag`` set to ``value`` (replaced in place, else added after p=/v=)."""
    parts = [p.strip() for p in record.split(";") if p.strip()]
    for index, part in enumerate(parts):
        if part.split("=", 1)[0].strip().lower() == tag:
            parts[index] = f"{tag}={value}"
            return "; ".join(parts)
    at = next((i + 1 for i, p in enumerate(parts) if p.lower().startswith("p=")), 1)
    parts.insert(at, f"{tag}={value}")
    return "; ".join(parts)


def without_tag(record: str, tag: str) -> str:
    parts = [p.strip() for p in record.split(";") if p.strip()]
    return "; ".join(p for p in parts if p.split("=", 1)[0].strip().lower() != tag)


@dataclass(frozen=True)
class Found:
    domain: str  # the address's domain
    at: str | None  # where the record was found (the domain or an ancestor)
    record: str | None
    tags: dict[str, str]
    result: CheckResult

    @property
    def inherited(self) -> bool:
        return self.at is not None and self.at != self.domain


async def find_dmarc(ctx: CheckContext, domain: str) -> Found:
    async def walk() -> Found:
        lookup = await find_policy(ctx.resolver, domain)
        if lookup.error:
            what = f"TXT of _dmarc.{lookup.asked[-1]}"
            return Found(
                domain, None, None, {}, could_not_tell("dmarc.record", what, [lookup.error])
            )
        found = classify_dmarc(domain, lookup.at, lookup.records) if lookup.at else None
        return found if found is not None else _no_dmarc(domain)

    return await ctx.once(("dmarc", domain), walk)


def classify_dmarc(domain: str, name: str, txt: Iterable[str]) -> Found | None:
    """What the TXT records at ``_dmarc.<name>`` say for ``domain``; None when none of them is a
    DMARC record (the walk goes on up)."""
    records = [r for r in txt if is_dmarc(r)]
    if not records:
        return None
    if len(records) > 1:
        return Found(domain, name, None, {}, _several_records(name, records))
    published = records[0]
    # A missing ";" makes receivers read "v=DMARC1 p=reject" as one invalid value.
    record = separated(published)
    tags = {
        k: v.lower() if k in ("p", "sp", "np", "adkim", "aspf", "t") else v
        for k, v in parse_tags(record).items()
    }
    invalid = _invalid_record(name, published, record, tags)
    if invalid is not None:
        return Found(domain, name, None, {}, invalid)
    where = "" if name == domain else f" (organisational domain of {domain})"
    result = CheckResult(
        "dmarc.record", Status.PASS, f"DMARC record at _dmarc.{name}{where}", record
    )
    return Found(domain, name, record, tags, result)


def _several_records(name: str, records: list[str]) -> CheckResult:
    keep = _strongest(records)
    delete = " and ".join(f'"{r}"' for r in records if r != keep)
    return CheckResult(
        "dmarc.record",
        Status.FAIL,
        f"_dmarc.{name} has {len(records)} DMARC records; receivers then use none",
        detail=" | ".join(records),
        fix=f"delete {delete} and keep exactly one: {txt_record('_dmarc.' + name, keep)}",
    )


def _invalid_record(
    name: str, published: str, record: str, tags: dict[str, str]
) -> CheckResult | None:
    """The failure for a record without p=, with an invalid policy or alignment value, or with
    tags glued together without ";" (``record`` is ``published`` with the ";" put back)."""
    glued = record.count(";") > published.rstrip("; ").count(";")
    bad: list[str] = [t for t in ("p", "sp", "np") if t in tags and tags[t] not in _POLICIES]
    bad += [t for t in ("adkim", "aspf") if t in tags and tags[t] not in ("r", "s")]
    if "p" in tags and not bad and not glued:
        return None
    what = f"invalid {', '.join(f'{t}={tags[t]}' for t in bad)}" if bad else "no p= tag"
    repaired = record
    if "p" not in tags or "p" in bad:
        repaired = with_tag(repaired, "p", "quarantine")
    for t in bad:
        if t != "p":
            repaired = without_tag(repaired, t)
    if glued:
        what = "a ';' missing between tags" + (f" and {what}" if bad or "p" not in tags else "")
    return CheckResult(
        "dmarc.record",
        Status.FAIL,
        f"the DMARC record at _dmarc.{name} has {what}",
        detail=published,
        fix=f"publish: {txt_record('_dmarc.' + name, repaired)}",
    )


def _no_dmarc(domain: str) -> Found:
    fresh = f"publish: {txt_record('_dmarc.' + domain, starter(domain))}"
    result = CheckResult(
        "dmarc.record",
        Status.FAIL,
        f"no DMARC record for {domain}",
        detail="asked: " + ", ".join(f"_dmarc.{n}" for n in walk_names(domain)),
        fix=fresh + " (start with p=quarantine; read the rua= reports, then move to p=reject)",
    )
    return Found(domain, None, None, {}, result)


def check_policy(found: Found) -> CheckResult:
    if found.record is None:
        return skipped(
            "dmarc.policy", "dmarc.record found no usable record", "fix dmarc.record first"
        )
    assert found.at is not None
    tag = "sp" if found.inherited and "sp" in found.tags else "p"
    policy = found.tags[tag]
    name = f"_dmarc.{found.at}"
    if policy == "none":
        return CheckResult(
            "dmarc.policy",
            Status.WARN,
            f"{tag}=none: DMARC only monitors; forged mail from {found.domain} is still delivered",
            detail=found.record,
            fix=f"once the reports show your mail passing, publish: "
            f"{txt_record(name, with_tag(found.record, tag, 'quarantine'))}",
        )
    if found.tags.get("t") == "y":
        return CheckResult(
            "dmarc.policy",
            Status.WARN,
            f"{tag}={policy} in testing mode (t=y): receivers apply a weaker policy",
            detail=found.record,
            fix=f"publish: {txt_record(name, without_tag(found.record, 't'))}",
        )
    pct = found.tags.get("pct", "100")
    if pct != "100":
        return CheckResult(
            "dmarc.policy",
            Status.WARN,
            f"{tag}={policy} applies to only pct={pct}% of failing mail",
            detail=found.record,
            fix=f"publish: {txt_record(name, without_tag(found.record, 'pct'))}",
        )
    return CheckResult("dmarc.policy", Status.PASS, f"{tag}={policy}", detail=found.record)


def check_alignment(
    found: Found, entry: SupportAddress, spf: CheckResult | None, dkim: CheckResult | None
) -> CheckResult:
    """The connector sends with MAIL FROM = the support address and signs with d= its domain,
    so both identifiers equal the From domain: aligned under relaxed and strict modes alike.
    What decides DMARC is whether they *pass*."""
    if found.record is None:
        return skipped(
            "dmarc.alignment", "dmarc.record found no usable record", "fix dmarc.record first"
        )
    domain = found.domain
    spf_pass = spf is not None and spf.status is Status.PASS
    dkim_pass = dkim is not None and dkim.status is Status.PASS
    modes = f"adkim={found.tags.get('adkim', 'r')}, aspf={found.tags.get('aspf', 'r')}"
    detail = (
        f"From {domain}; MAIL FROM {entry.address.ascii} (SPF domain {domain}); "
        + (f"DKIM d={domain} s={entry.dkim.selector}" if entry.dkim else "no DKIM signature")
        + f"; {modes}; SPF {spf.status.value if spf else 'n/a'}, DKIM {dkim.status.value if dkim else 'n/a'}"
    )
    if spf_pass and dkim_pass:
        return CheckResult("dmarc.alignment", Status.PASS, "SPF and DKIM both pass aligned", detail)
    if dkim_pass:
        return CheckResult(
            "dmarc.alignment", Status.PASS, "DKIM passes aligned (SPF does not)", detail
        )
    if spf_pass:
        return CheckResult(
            "dmarc.alignment",
            Status.WARN,
            "only SPF passes aligned: mail that is forwarded on will fail DMARC",
            detail,
            fix="sign with DKIM: "
            + (
                "make dkim.key-match pass (see its fix)"
                if entry.dkim
                else "re-add the address with --dkim-selector and --dkim-key and publish the key"
            ),
        )
    if any(r is not None and r.status is Status.ERROR for r in (spf, dkim)):
        return could_not_tell(
            "dmarc.alignment",
            "whether SPF or DKIM passes",
            [r.summary for r in (spf, dkim) if r is not None and r.status is Status.ERROR],
        )
    return CheckResult(
        "dmarc.alignment",
        Status.FAIL,
        f"neither SPF nor DKIM passes for {domain}: receivers apply p={found.tags['p']}",
        detail,
        fix="make spf.authorizes pass (publish the record in its fix) and/or dkim.key-match pass",
    )


async def run_dmarc(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    from smtpconn.checks.dkim_checks import run_dkim
    from smtpconn.checks.spf import run_spf

    found = await find_dmarc(ctx, entry.address.domain)
    if found.record is None:
        return [found.result, check_policy(found), check_alignment(found, entry, None, None)]
    reason = no_server_reason(entry)
    if reason:
        return [
            found.result,
            check_policy(found),
            skipped("dmarc.alignment", reason, NO_SERVER_FIX),
        ]
    spf_results, dkim_results = await asyncio.gather(run_spf(ctx, entry), run_dkim(ctx, entry))
    spf = next((r for r in spf_results if r.id == "spf.authorizes"), None)
    # A server that signs itself: its published key is all verify can judge (send-test
    # --direction roundtrip verifies the signature it adds).
    evidence = "dkim.key" if entry.dkim and entry.dkim.server_signs else "dkim.key-match"
    dkim = next((r for r in dkim_results if r.id == evidence), None)
    if dkim is not None and dkim.status is Status.SKIP:
        dkim = None
    if spf is not None and spf.status is Status.SKIP:
        spf = None
    return [found.result, check_policy(found), check_alignment(found, entry, spf, dkim)]
