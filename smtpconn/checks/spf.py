"""The ``spf`` family (RFC 7208): ``spf.record`` (exactly one record, valid syntax),
``spf.lookups`` (processing limits, worst case) and ``spf.authorizes`` (every address of the
outbound server passes SPF for the support address's domain).

Syntax and limits are judged by our own parser (``spf_syntax``, ``spf_limits``) because they must
name the offending term and count the worst case; the pass/fail verdict for each server address
comes from pyspf, an independent implementation, run in a worker thread with its DNS lookups
answered by the run's resolver (``smtpconn.dns.sync``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from smtpconn.checks import catalogue, spf_syntax
from smtpconn.checks.common import (
    NO_SERVER_FIX,
    could_not_tell,
    no_server_reason,
    server_addresses,
    skipped,
    sync_dns,
)
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.records import txt_record
from smtpconn.checks.spf_limits import (
    MAX_DNS_TERMS,
    MAX_MX_NAMES,
    MAX_VOID,
    LimitReport,
    count_limits,
    flattened_record,
)
from smtpconn.dns import DnsAnswer, DnsOutcome
from smtpconn.dns.sync import SyncDns, bound
from smtpconn.profile.model import SupportAddress

IDS = catalogue.SPF


@dataclass(frozen=True)
class SpfLookup:
    """What ``spf.record`` found for a domain: the one valid record, or the reason there is none."""

    domain: str
    record: spf_syntax.SpfRecord | None
    result: CheckResult


def _server_terms(entry: SupportAddress, addresses: tuple[str, ...] = ()) -> list[str]:
    if addresses:
        return [spf_syntax.address_mechanism(a) for a in addresses]
    if entry.outbound is not None and no_server_reason(entry) is None:
        from smtpconn.checks.common import is_ip

        host = entry.outbound.host
        return [spf_syntax.address_mechanism(host.strip("[]"))] if is_ip(host) else [f"a:{host}"]
    return ["mx"]


async def find_record(ctx: CheckContext, entry: SupportAddress) -> SpfLookup:
    domain = entry.address.domain
    answer = await ctx.resolver.query(domain, "TXT")
    fresh = " ".join(["v=spf1", *_server_terms(entry), "-all"])
    return classify_spf(domain, answer, fresh)


def classify_spf(domain: str, answer: DnsAnswer, fresh: str) -> SpfLookup:
    """spf.record from the TXT answer of ``domain``; ``fresh`` is the record to publish when it
    has none."""
    if answer.outcome is DnsOutcome.ERROR:
        return SpfLookup(
            domain, None, could_not_tell("spf.record", f"TXT of {domain}", [answer.error])
        )
    records = [r for r in answer.records if spf_syntax.is_spf(r)]
    if not records:
        result = CheckResult(
            "spf.record",
            Status.FAIL,
            f"{domain} publishes no SPF record",
            detail=f"TXT {answer.outcome.value}: " + " | ".join(answer.records),
            fix=f"publish: {txt_record(domain, fresh)}",
        )
        return SpfLookup(domain, None, result)
    if len(records) > 1:
        return SpfLookup(domain, None, _several_records(domain, records))
    record = spf_syntax.parse_spf(records[0])
    if not record.valid:
        return SpfLookup(domain, None, _syntax_error(record))
    result = CheckResult(
        "spf.record", Status.PASS, f"one valid SPF record for {domain}", records[0]
    )
    return SpfLookup(domain, record, result)


def _several_records(domain: str, records: list[str]) -> CheckResult:
    merged = spf_syntax.merge(records)
    return CheckResult(
        "spf.record",
        Status.FAIL,
        f"{domain} publishes {len(records)} SPF records (permerror, RFC 7208 §4.5)",
        detail=" | ".join(records),
        fix=f"publish exactly one v=spf1 record: merge into: {merged} "
        f"(replace the {len(records)} records with: {txt_record(domain, merged)})",
    )


def _syntax_error(record: spf_syntax.SpfRecord) -> CheckResult:
    problems = "; ".join(f"{p.term!r}: {p.reason}" for p in record.problems)
    repaired = spf_syntax.corrected(record)
    fix = f"replace the record with: {repaired}" if repaired else ""
    stripped = spf_syntax.without_bad_terms(record)
    fix += (" or, " if fix else "") + f"remove the offending term(s): {stripped}"
    return CheckResult(
        "spf.record",
        Status.FAIL,
        f"SPF syntax error (permerror) in {', '.join(repr(p.term) for p in record.problems)}",
        detail=f"{record.text} — {problems}",
        fix=fix,
    )


async def limit_report(ctx: CheckContext, domain: str, record: spf_syntax.SpfRecord) -> LimitReport:
    return await ctx.once(
        ("spf-limits", domain), lambda: count_limits(ctx.resolver, domain, record)
    )


def _replacement(
    record: str, drop: set[str], entry: SupportAddress, addresses: tuple[str, ...] = ()
) -> str:
    """``record`` without the terms in ``drop``, with the server added (by its ``addresses``
    when known, else by name), ending in ``-all`` when nothing else ends it (a record without
    all or redirect= is neutral for everyone)."""
    terms = [t for t in record.split(" ") if t and t not in drop]
    text = spf_syntax.with_mechanisms(" ".join(terms), _server_terms(entry, addresses))
    bodies = [t.lstrip("+-~?").lower() for t in text.split(" ")[1:]]
    if "all" not in bodies and not any(b.startswith("redirect=") for b in bodies):
        text += " -all"
    return text


def _with_server(record: str, entry: SupportAddress | None, addresses: tuple[str, ...]) -> str:
    return record if entry is None else _replacement(record, set(), entry, addresses)


async def _server_ips(ctx: CheckContext, entry: SupportAddress | None) -> tuple[str, ...]:
    if entry is None or entry.outbound is None or no_server_reason(entry):
        return ()
    return (await server_addresses(ctx, entry.outbound.host)).addresses


def judge_ptr(found: SpfLookup, entry: SupportAddress, addresses: tuple[str, ...]) -> SpfLookup:
    """RFC 7208 §5.5: ptr SHOULD NOT be used (a PTR and an address lookup per client, and
    receivers may skip it, so whatever it authorises may fail): spf.record warns."""
    assert found.record is not None
    terms = [
        t
        for t in found.record.text.split(" ")[1:]
        if t.lstrip("+-~?").lower() == "ptr" or t.lstrip("+-~?").lower().startswith("ptr:")
    ]
    if not terms:
        return found
    fixed = _replacement(found.record.text, set(terms), entry, addresses)
    result = CheckResult(
        "spf.record",
        Status.WARN,
        f"the SPF record of {found.domain} uses {', '.join(terms)}, which RFC 7208 §5.5 says "
        "not to use: slow, and receivers may skip it",
        detail=found.record.text,
        fix=f"publish (without {', '.join(terms)}; adds the server): "
        f"{txt_record(found.domain, fixed)}",
    )
    return SpfLookup(found.domain, found.record, result)


def judge_permissive(found: SpfLookup, report: LimitReport, entry: SupportAddress) -> SpfLookup:
    """A record that passes every address on the Internet (``+all``, directly or through an
    include/redirect) makes SPF, and DMARC through it, meaningless: spf.record fails."""
    if found.record is None or not report.permissive:
        return found
    culprits = sorted({term for term, _ in report.permissive})
    where = "; ".join(
        f"{term}" + (f" (→ {at} ends in +all)" if at != found.domain else "")
        for term, at in dict.fromkeys(report.permissive)
    )
    fixed = _replacement(found.record.text, set(culprits), entry)
    return SpfLookup(
        found.domain,
        found.record,
        CheckResult(
            "spf.record",
            Status.FAIL,
            f"the SPF record of {found.domain} authorises every address on the Internet: {where}",
            detail=found.record.text,
            fix=f"publish (without {', '.join(culprits)}; adds the server): "
            f"{txt_record(found.domain, fixed)}",
        ),
    )


def _missing_result(found: SpfLookup, report: LimitReport, entry: SupportAddress) -> CheckResult:
    assert found.record is not None
    terms = ", ".join(
        term if term.endswith(target) else f"{term} (→ {target})" for term, target in report.missing
    )
    server = " ".join(["v=spf1", *_server_terms(entry), "-all"])
    publish = "; ".join(
        f"publish: {txt_record(target, server)}"
        for target in dict.fromkeys(t for _, t in report.missing)
    )
    dropped = _replacement(found.record.text, {term for term, _ in report.missing}, entry)
    return CheckResult(
        "spf.lookups",
        Status.FAIL,
        f"SPF of {found.domain} is a permerror: {terms} names a domain without an SPF record "
        "(RFC 7208 §5.2, §6.1)",
        f"{report.lookups} DNS-mechanism lookups; " + "\n".join(report.tree),
        fix=f"{publish} (or, if that name is not yours, replace the record with: "
        f"{txt_record(found.domain, dropped)})",
    )


async def check_lookups(
    ctx: CheckContext, found: SpfLookup, entry: SupportAddress | None = None
) -> CheckResult:
    if found.record is None:
        return skipped("spf.lookups", "spf.record found no valid record", "fix spf.record first")
    record = found.record
    report = await limit_report(ctx, found.domain, record)
    counts = (
        f"{report.lookups} DNS-mechanism lookups (limit {MAX_DNS_TERMS}), "
        f"{report.void} void lookups (limit {MAX_VOID}) in the worst case"
    )
    detail_parts = [counts, *report.tree]
    if report.void_terms:
        detail_parts.append("void: " + ", ".join(report.void_terms))
    detail_parts += report.notes
    detail = "\n".join(detail_parts)
    if report.errors and not report.over and not report.problems:
        return could_not_tell("spf.lookups", f"the lookups of {found.domain}'s SPF", report.errors)
    if report.missing and entry is not None and not report.problems and not report.over:
        return _missing_result(found, report, entry)
    if report.lookups > MAX_DNS_TERMS or report.problems:
        # The flattened record keeps what the old one reached; a loop or a broken include
        # reached nothing, so the server is added (or the fix would leave it unauthorised).
        flat = _with_server(flattened_record(report), entry, await _server_ips(ctx, entry))
        why = report.problems[:] if report.problems else []
        if report.lookups > MAX_DNS_TERMS:
            why.insert(0, f"{report.lookups} DNS-mechanism lookups > {MAX_DNS_TERMS}")
        if report.lookups > MAX_DNS_TERMS:
            how = f"cut the lookups to at most {MAX_DNS_TERMS}: drop includes you do not use, or"
        elif any("MX names" in p for p in report.problems):
            how = f"an mx term may name at most {MAX_MX_NAMES} hosts: list fewer MX hosts, or"
        else:
            how = "correct the nested records named above, or"
        added = "; adds the server" if entry is not None else ""
        return CheckResult(
            "spf.lookups",
            Status.FAIL,
            f"SPF of {found.domain} exceeds the RFC 7208 limits (permerror): {'; '.join(why)}",
            detail,
            fix=f"{how} publish the flattened record (same addresses, no nested lookups; "
            f"re-check it when an included provider changes its addresses{added}): "
            f"{txt_record(found.domain, flat)}",
        )
    if report.void > MAX_VOID:
        gone = {v.split(" (in ")[0] for v in report.void_terms}
        kept = " ".join(t for t in record.text.split(" ") if t and t not in gone)
        kept = _with_server(kept, entry, await _server_ips(ctx, entry))
        return CheckResult(
            "spf.lookups",
            Status.FAIL,
            f"SPF of {found.domain} makes {report.void} void lookups > {MAX_VOID} (permerror)",
            detail,
            fix=f"remove the terms whose names do not exist ({', '.join(report.void_terms)})"
            f"{' and add the server' if entry is not None else ''}: "
            f"{txt_record(found.domain, kept)}",
        )
    return CheckResult("spf.lookups", Status.PASS, counts, detail)


def _evaluate_blocking(
    bridge: SyncDns, ip: str, sender: str, helo: str, timeout: float
) -> tuple[str, str]:
    import spf

    with bound(bridge):
        result, _code, explanation = spf.query(
            i=ip, s=sender, h=helo, timeout=timeout, querytime=0
        ).check()
    return str(result), str(explanation)


async def evaluate(ctx: CheckContext, ip: str, sender: str, helo: str) -> tuple[str, str]:
    """pyspf's (result, explanation) for ``ip`` sending as ``sender``; once per run."""
    bridge = await sync_dns(ctx)
    domain = sender.rpartition("@")[2].lower()
    return await ctx.once(
        ("spf-eval", ip, sender.lower() if "%" in sender else domain, helo.lower()),
        lambda: asyncio.to_thread(
            _evaluate_blocking, bridge, ip, sender, helo, ctx.settings.timeout
        ),
    )


async def check_authorizes(
    ctx: CheckContext, entry: SupportAddress, found: SpfLookup, lookups: CheckResult
) -> CheckResult:
    reason = no_server_reason(entry)
    if reason:
        return skipped("spf.authorizes", reason, NO_SERVER_FIX)
    if found.record is None:
        return skipped("spf.authorizes", "spf.record found no valid record", "fix spf.record first")
    assert entry.outbound is not None
    server = await server_addresses(ctx, entry.outbound.host)
    if not server.addresses:
        return skipped(
            "spf.authorizes",
            f"dns.server-address found no address for {entry.outbound.host}",
            "fix dns.server-address first",
        )
    sender = entry.address.ascii
    results = await asyncio.gather(
        *(evaluate(ctx, ip, sender, entry.outbound.host) for ip in server.addresses)
    )
    verdicts = list(zip(server.addresses, results, strict=True))
    detail = "\n".join(f"{ip}: {result} ({explanation})" for ip, (result, explanation) in verdicts)
    passed = [ip for ip, (result, _) in verdicts if result == "pass"]
    if len(passed) == len(verdicts):
        return CheckResult(
            "spf.authorizes",
            Status.PASS,
            f"SPF of {found.domain} authorises {', '.join(passed)}",
            detail,
        )
    temp = [ip for ip, (result, _) in verdicts if result == "temperror"]
    failed = [ip for ip, (result, _) in verdicts if result not in ("pass", "temperror")]
    if not failed:
        return could_not_tell(
            "spf.authorizes",
            f"SPF of {found.domain} for {', '.join(temp)} (temperror)",
            [e for _, (_, e) in verdicts],
        )
    permerror = [ip for ip, (result, _) in verdicts if result == "permerror"]
    unauthorised = [ip for ip in failed if ip not in permerror]
    summary = (
        f"SPF of {found.domain} does not authorise "
        + ", ".join(f"{ip} ({dict(verdicts)[ip][0]})" for ip in failed)
        + (f"; passes {', '.join(passed)}" if passed else "")
        + (f"; could not tell for {', '.join(temp)}" if temp else "")
    )
    if permerror and lookups.status is Status.FAIL:
        fix = f"the record is a permerror for receivers: {lookups.fix}"
    elif permerror:
        fix = "receivers get a permerror from this record: " + "; ".join(
            e for ip, (_, e) in verdicts if ip in permerror
        )
    else:
        merged = spf_syntax.with_mechanisms(
            found.record.text, _server_terms(entry, tuple(unauthorised))
        )
        fix = f"publish (keeps the existing terms, adds the server): {txt_record(found.domain, merged)}"
    return CheckResult("spf.authorizes", Status.FAIL, summary, detail, fix)


async def run_spf(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    """The family's results for ``entry``; computed once per run (dmarc.alignment reads them)."""
    return await ctx.once(("spf-family", entry.address.key), lambda: _run_spf(ctx, entry))


async def _run_spf(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    found = await find_record(ctx, entry)
    if found.record is not None:
        found = judge_permissive(found, await limit_report(ctx, found.domain, found.record), entry)
    if found.record is not None and found.result.status is Status.PASS:
        found = judge_ptr(found, entry, await _server_ips(ctx, entry))
    lookups = await check_lookups(ctx, found, entry)
    authorizes = await check_authorizes(ctx, entry, found, lookups)
    return [found.result, lookups, authorizes]
