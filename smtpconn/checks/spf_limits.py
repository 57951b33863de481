"""RFC 7208 §4.6.4 processing limits, counted for the worst case: a sender that matches nothing,
so every mechanism up to ``all`` (and every nested include / redirect) is evaluated.

The walk also gathers what a *flattened* record needs (the addresses behind a/mx/include), so that
the fix for "too many lookups" is a literal record with the same meaning and fewer lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from smtpconn.checks.spf_syntax import DNS_TERMS, SpfRecord, Term, is_spf, parse_spf
from smtpconn.dns import DnsOutcome, Resolver

MAX_DNS_TERMS = 10
MAX_VOID = 2
MAX_MX_NAMES = 10
_WALK_CAP = 4 * MAX_DNS_TERMS  # stop walking absurd trees (pyspf stops at the same point)


@dataclass
class LimitReport:
    domain: str
    lookups: int = 0
    void: int = 0
    void_terms: list[str] = field(default_factory=list)  # "term (in domain)"
    problems: list[str] = field(default_factory=list)  # permerrors found on the way
    errors: list[str] = field(default_factory=list)  # could not tell
    notes: list[str] = field(default_factory=list)
    tree: list[str] = field(default_factory=list)  # one line per DNS term, indented by depth
    flattened: list[str] = field(default_factory=list)  # terms of the flattened record
    #: include:/redirect= whose target has no usable SPF record: (term as written, target)
    missing: list[tuple[str, str]] = field(default_factory=list)
    #: where a pass for EVERY address comes from: (top-level term as written, where the +all is)
    permissive: list[tuple[str, str]] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.lookups > MAX_DNS_TERMS or self.void > MAX_VOID


class _Walker:
    def __init__(self, resolver: Resolver, report: LimitReport) -> None:
        self.resolver = resolver
        self.report = report
        self.top = ""  # the top-level term being walked (what a fix must change)
        self.top_passes = True  # its qualifier is "+": a match inside it means pass

    async def addresses(self, name: str, term: Term) -> tuple[list[str], bool]:
        """(flattened ip4:/ip6: terms, void) for the A/AAAA of ``name``; void is judged on A,
        as for an IPv4 sender (the one query a receiver makes for it)."""
        a = await self.resolver.query(name, "A")
        aaaa = await self.resolver.query(name, "AAAA")
        for answer in (a, aaaa):
            if answer.outcome is DnsOutcome.ERROR:
                self.report.errors.append(answer.error)
        out = [_network("ip4", r, term.cidr4) for r in a.records]
        out += [_network("ip6", r, term.cidr6) for r in aaaa.records]
        return out, a.void

    def void(self, term: Term, domain: str) -> None:
        self.report.void += 1
        self.report.void_terms.append(f"{term.text} (in {domain})")

    async def fetch(self, domain: str) -> SpfRecord | None:
        answer = await self.resolver.query(domain, "TXT")
        if answer.outcome is DnsOutcome.ERROR:
            self.report.errors.append(answer.error)
            return None
        records = [r for r in answer.records if is_spf(r)]
        if not records and self.top:
            # Its own finding (spf.lookups says what to publish there), not a limit problem.
            self.report.missing.append((self.top, domain))
            return None
        if len(records) != 1:
            self.report.problems.append(
                f"{domain} has {len(records) or 'no'} SPF record{'s' if len(records) != 1 else ''}"
            )
            return None
        record = parse_spf(records[0])
        if not record.valid:
            self.report.problems.append(
                f"{domain}: " + "; ".join(f"{p.term!r} {p.reason}" for p in record.problems)
            )
            return None
        return record

    async def walk(
        self, domain: str, record: SpfRecord, depth: int, chain: tuple[str, ...]
    ) -> list[str]:
        """Count ``record``'s lookups; return its terms that match a *pass* (for flattening),
        each with the qualifier it carries at this level."""
        flat: list[str] = []
        for term in record.evaluated_terms():
            if self.report.lookups > _WALK_CAP:
                self.report.problems.append(f"more than {_WALK_CAP} DNS lookups; stopped counting")
                return flat
            if depth == 0:
                self.top, self.top_passes = term.text, term.qualifier == "+"
            if term.name == "all" and term.qualifier == "+" and self.top_passes:
                self.report.permissive.append((self.top or term.text, domain))
            if term.name in ("ip4", "ip6", "all"):
                flat.append(term.text)
                continue
            assert term.name in DNS_TERMS
            self.count(term, domain, depth)
            flat += await self.dns_term(term, domain, depth, chain)
        redirect = record.modifier("redirect")
        if redirect is not None and record.all_term is None:
            flat += await self.redirect(redirect, domain, depth, chain)
        return flat

    def count(self, term: Term, domain: str, depth: int) -> None:
        self.report.lookups += 1
        self.report.tree.append(f"{'  ' * depth}{term.text} (in {domain}) -> {self.report.lookups}")

    async def dns_term(
        self, term: Term, domain: str, depth: int, chain: tuple[str, ...]
    ) -> list[str]:
        """The flattened terms for one mechanism that costs a lookup."""
        if term.has_macro or term.name in ("ptr", "exists"):
            await self.sender_dependent(term, domain)
            return [term.text]
        q = "" if term.qualifier == "+" else term.qualifier
        target = term.value or domain
        if term.name == "a":
            ips, void = await self.addresses(target, term)
            if void:
                self.void(term, domain)
            return [q + ip for ip in ips]
        if term.name == "mx":
            return [q + ip for ip in await self.mx(term, domain, target)]
        if term.name == "include":
            return await self.include(term, domain, depth, chain)
        return []

    async def sender_dependent(self, term: Term, domain: str) -> None:
        """ptr, exists and macro terms: counted and judged, but kept literally when flattening
        (what they match depends on the sender)."""
        if term.name == "ptr":
            self.report.notes.append(f"{term.text} in {domain}: ptr is discouraged (RFC 7208 §5.5)")
        if term.has_macro:
            self.report.notes.append(f"{term.text} in {domain} depends on the sender (macro)")
        elif term.name == "exists":
            answer = await self.resolver.query(term.value or domain, "A")
            if answer.outcome is DnsOutcome.ERROR:
                self.report.errors.append(answer.error)
            elif answer.void:
                self.void(term, domain)

    async def mx(self, term: Term, domain: str, target: str) -> list[str]:
        """The ip4:/ip6: terms behind every MX host of ``target`` (unqualified)."""
        answer = await self.resolver.query(target, "MX")
        if answer.outcome is DnsOutcome.ERROR:
            self.report.errors.append(answer.error)
            return []
        if answer.void:
            self.void(term, domain)
            return []
        hosts = mx_hosts(answer.records)
        if len(hosts) > MAX_MX_NAMES:
            self.report.problems.append(
                f"{term.text} in {domain}: {len(hosts)} MX names (limit {MAX_MX_NAMES})"
            )
        # Every host, even past the limit: the flattened record must keep them all.
        out: list[str] = []
        for host in hosts:
            if host in ("", "."):
                continue
            ips, void = await self.addresses(host, term)
            if void:
                self.void(term, f"{domain}, MX host {host}")
            out += ips
        return out

    async def include(
        self, term: Term, domain: str, depth: int, chain: tuple[str, ...]
    ) -> list[str]:
        target = term.value or domain
        if target.lower() in chain:
            self.report.problems.append(f"{term.text} in {domain} loops back to {target}")
            return []
        inner = await self.fetch_counting_void(term, domain, target)
        if inner is None:
            return []
        inner_flat = await self.walk(target, inner, depth + 1, (*chain, target.lower()))
        return included_pass_terms(term.qualifier, inner_flat)

    async def redirect(
        self, redirect: Term, domain: str, depth: int, chain: tuple[str, ...]
    ) -> list[str]:
        if depth == 0:
            self.top, self.top_passes = redirect.text, True
        self.count(redirect, domain, depth)
        target = redirect.value
        if redirect.has_macro:
            self.report.notes.append(f"{redirect.text} in {domain} depends on the sender (macro)")
            return [redirect.text]
        if target.lower() in chain:
            self.report.problems.append(f"{redirect.text} in {domain} loops back to {target}")
            return []
        inner = await self.fetch_counting_void(redirect, domain, target)
        if inner is None:
            return []
        return await self.walk(target, inner, depth + 1, (*chain, target.lower()))

    async def fetch_counting_void(self, term: Term, domain: str, target: str) -> SpfRecord | None:
        answer = await self.resolver.query(target, "TXT")
        if answer.void:
            self.void(term, domain)
        return await self.fetch(target)


async def count_limits(resolver: Resolver, domain: str, record: SpfRecord) -> LimitReport:
    report = LimitReport(domain)
    walker = _Walker(resolver, report)
    flat = await walker.walk(domain, record, 0, (domain.lower(),))
    seen: set[str] = set()
    for term in flat:
        if term.lower() not in seen:
            seen.add(term.lower())
            report.flattened.append(term)
    exp = record.modifier("exp")
    if exp is not None:
        report.flattened.append(exp.text)
    return report


def mx_hosts(records: Iterable[str]) -> list[str]:
    """The host names of MX answers (``"10 mx.example."`` -> ``"mx.example"``)."""
    return [r.split(" ", 1)[1].rstrip(".") for r in records]


def included_pass_terms(qualifier: str, inner_flat: list[str]) -> list[str]:
    """An include matches only when the inner result is pass: keep the inner pass terms (not
    ``all``), carrying the include's own qualifier."""
    q = "" if qualifier == "+" else qualifier
    # An inner "+ip4:…" loses its own "+": one qualifier per term ("~+ip4:" is not SPF).
    return [
        q + t.removeprefix("+")
        for t in inner_flat
        if t[0] not in "-~?" and t.removeprefix("+") != "all"
    ]


def _network(kind: str, address: str, cidr: int | None) -> str:
    """``ip4:192.0.2.0/24`` for ``a/24`` on 192.0.2.7: the network, as receivers match it."""
    import ipaddress

    if cidr is None:
        return f"{kind}:{address}"
    network = ipaddress.ip_network(f"{address}/{cidr}", strict=False)
    return f"{kind}:{network.compressed}"


def flattened_record(report: LimitReport) -> str:
    return " ".join(["v=spf1", *report.flattened])
