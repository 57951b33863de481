"""The ``dns`` family: ``dns.mx`` (the support address can receive mail), ``dns.server-address``
(the outbound server's name resolves) and ``dns.reverse`` (each of its addresses has a PTR that
resolves back to it: forward-confirmed reverse DNS, which many receivers require)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from smtpconn.checks import catalogue
from smtpconn.checks.common import (
    NO_SERVER_FIX,
    cname_loop,
    could_not_tell,
    is_ip,
    no_server_reason,
    server_addresses,
    skipped,
)
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.records import fqdn
from smtpconn.dns import DnsAnswer, DnsOutcome
from smtpconn.profile.model import SupportAddress

IDS = catalogue.DNS


async def run_dns(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    mx, server = await asyncio.gather(check_mx(ctx, entry), check_server_address(ctx, entry))
    reverse = await check_reverse(ctx, entry)
    return [mx, server, reverse]


@dataclass(frozen=True, slots=True)
class MxHost:
    """One MX host and what its lookups found."""

    preference: int
    name: str
    resolves: bool = False  # it has an A or AAAA record
    errors: tuple[str, ...] = ()  # lookups that could not tell
    alias: str | None = None  # the CNAME target, when the name is an alias


async def check_mx(ctx: CheckContext, entry: SupportAddress) -> CheckResult:
    domain = entry.address.domain
    mail_host = entry.outbound.host if entry.outbound else "mail.your-provider.example"
    publish = f"publish: {fqdn(domain)} MX 10 {fqdn(mail_host)} (the host that receives mail for {domain})"
    answer = await ctx.resolver.query(domain, "MX")
    if answer.outcome is DnsOutcome.ERROR:
        return could_not_tell("dns.mx", f"MX of {domain}", [answer.error])
    if answer.void:
        # RFC 5321 §5.1: without MX the domain's own address is the implicit MX.
        a, aaaa = await asyncio.gather(
            ctx.resolver.query(domain, "A"), ctx.resolver.query(domain, "AAAA")
        )
        return judge_no_mx(domain, entry.address.ascii, (answer, a, aaaa), publish)
    hosts = parse_mx(answer.records)
    if len(hosts) == 1 and hosts[0][1] in ("", "."):
        return CheckResult(
            "dns.mx",
            Status.FAIL,
            f"{domain} publishes a null MX (RFC 7505): it accepts no mail",
            detail=f"MX {answer.records[0]}",
            fix=f"replace the null MX with: {fqdn(domain)} MX 10 {fqdn(mail_host)}",
        )
    literal = judge_ip_literals(domain, hosts, mail_host)
    if literal is not None:
        return literal
    return judge_mx_hosts(domain, await _look_up_mx_hosts(ctx, hosts), publish)


def judge_ip_literals(
    domain: str, hosts: list[tuple[int, str]], mail_host: str
) -> CheckResult | None:
    """An MX names a host (RFC 5321 §5.1, RFC 2181 §10.3): ``MX 10 192.0.2.1.`` is the name
    "192.0.2.1.", which senders look up and do not find, not an address."""
    literals = [h for _, h in hosts if is_ip(h)]
    if not literals:
        return None
    named = ", ".join(literals)
    return CheckResult(
        "dns.mx",
        Status.FAIL if len(literals) == len(hosts) else Status.WARN,
        f"the MX of {domain} names an IP address ({named}), not a host name: senders look it "
        "up as a name and find nothing",
        detail="MX " + ", ".join(f"{p} {h}" for p, h in hosts),
        fix=(
            f"replace the MX records naming {named} with: {fqdn(domain)} MX 10 {fqdn(mail_host)}"
            if len(literals) == len(hosts)
            else f"remove the MX records naming {named}"
        )
        + " (an MX names a host; that host's A/AAAA records hold the address)",
    )


def parse_mx(records: Iterable[str]) -> list[tuple[int, str]]:
    """(preference, host) of each MX record, most preferred first."""
    hosts = []
    for record in records:
        preference, _, host = record.partition(" ")
        hosts.append((int(preference), host.rstrip(".")))
    return sorted(hosts)


async def _look_up_mx_hosts(ctx: CheckContext, hosts: list[tuple[int, str]]) -> list[MxHost]:
    async def look_up(preference: int, host: str) -> MxHost:
        a, aaaa, cname = await asyncio.gather(
            ctx.resolver.query(host, "A"),
            ctx.resolver.query(host, "AAAA"),
            ctx.resolver.query(host, "CNAME"),
        )
        return MxHost(
            preference,
            host,
            resolves=a.ok or aaaa.ok,
            errors=tuple(x.error for x in (a, aaaa) if x.outcome is DnsOutcome.ERROR),
            alias=cname.records[0].rstrip(".") if cname.ok else None,
        )

    return list(await asyncio.gather(*(look_up(p, h) for p, h in hosts)))


def judge_no_mx(
    domain: str, recipient: str, answers: tuple[DnsAnswer, DnsAnswer, DnsAnswer], publish: str
) -> CheckResult:
    """The verdict for a domain without MX, from its (void) MX answer and its A and AAAA."""
    mx, a, aaaa = answers
    if a.ok or aaaa.ok:
        return CheckResult(
            "dns.mx",
            Status.WARN,
            f"{domain} has no MX; mail goes to its own address (implicit MX)",
            detail=", ".join(a.records + aaaa.records),
            fix=publish,
        )
    errors = [x.error for x in (a, aaaa) if x.outcome is DnsOutcome.ERROR]
    if errors:
        return could_not_tell("dns.mx", f"address of {domain} (no MX)", errors)
    return CheckResult(
        "dns.mx",
        Status.FAIL,
        f"{domain} has no MX and no address: mail to {recipient} cannot be delivered",
        detail=f"MX {mx.outcome.value}, A {a.outcome.value}, AAAA {aaaa.outcome.value}",
        fix=publish,
    )


def judge_mx_hosts(domain: str, hosts: list[MxHost], publish: str) -> CheckResult:
    """The verdict on a domain's MX hosts (most preferred first) from what their lookups found."""
    detail = "MX " + ", ".join(f"{h.preference} {h.name}" for h in hosts)
    good = [h.name for h in hosts if h.resolves]
    bad = [h.name for h in hosts if not h.resolves and not h.errors]
    unknown = [h.name for h in hosts if not h.resolves and h.errors]
    if good and not bad and not unknown:
        aliases = {h.name: h.alias for h in hosts if h.alias and h.resolves}
        if aliases:
            return _mx_alias_warning(domain, hosts, aliases, detail)
        return CheckResult(
            "dns.mx", Status.PASS, f"{domain} receives mail at {', '.join(good)}", detail
        )
    if not good and unknown:
        return could_not_tell(
            "dns.mx",
            f"addresses of MX hosts {', '.join(unknown)}",
            [e for h in hosts for e in h.errors],
        )
    if not good:
        return CheckResult(
            "dns.mx",
            Status.FAIL,
            f"no MX host of {domain} resolves ({', '.join(bad)})",
            detail,
            fix=f"publish an A (or AAAA) record for {', '.join(fqdn(h) for h in bad)}, or {publish}",
        )
    return CheckResult(
        "dns.mx",
        Status.WARN,
        f"some MX hosts of {domain} do not resolve: {', '.join(bad + unknown)}",
        detail,
        fix=f"publish an A (or AAAA) record for {', '.join(fqdn(h) for h in bad + unknown)} "
        "or remove those MX records",
    )


def _mx_alias_warning(
    domain: str, hosts: list[MxHost], aliases: dict[str, str], detail: str
) -> CheckResult:
    # RFC 2181 §10.3, RFC 5321 §5.1: an MX names a host, never an alias; some senders
    # refuse or mis-handle it.
    records = "; ".join(
        f"{fqdn(domain)} MX {h.preference} {fqdn(aliases.get(h.name, h.name))}" for h in hosts
    )
    return CheckResult(
        "dns.mx",
        Status.WARN,
        f"the MX of {domain} names an alias (CNAME), not a host: "
        + ", ".join(f"{h} → {t}" for h, t in aliases.items()),
        detail,
        fix=f"publish the canonical names instead: {records} (and remove the MX records "
        f"naming {', '.join(fqdn(h) for h in aliases)})",
    )


async def check_server_address(ctx: CheckContext, entry: SupportAddress) -> CheckResult:
    reason = no_server_reason(entry)
    if reason:
        return skipped("dns.server-address", reason, NO_SERVER_FIX)
    assert entry.outbound is not None
    host = entry.outbound.host
    found = await server_addresses(ctx, host)
    if found.literal:
        return CheckResult(
            "dns.server-address",
            Status.PASS,
            f"outbound server is the address {found.addresses[0]} (no name to resolve)",
        )
    if found.addresses and not found.errors:
        return CheckResult(
            "dns.server-address",
            Status.PASS,
            f"{host} resolves to {', '.join(found.addresses)}",
        )
    if found.addresses:
        return CheckResult(
            "dns.server-address",
            Status.WARN,
            f"{host} resolves to {', '.join(found.addresses)}, but not every lookup answered",
            detail="; ".join(found.errors),
            fix="make sure the resolver answers both A and AAAA questions, then run verify again",
        )
    if found.errors:
        loop = await cname_loop(ctx, host)
        if loop:
            return CheckResult(
                "dns.server-address",
                Status.FAIL,
                f"the outbound server's name {host} is a CNAME loop ({' → '.join(loop)})",
                detail="; ".join(found.errors),
                fix=f"replace the CNAME at {fqdn(host)} with the server's address: {fqdn(host)} "
                "A <the server's IPv4 address> (and AAAA for IPv6), or set outbound.host in the "
                "profile to the server's real name",
            )
        return could_not_tell("dns.server-address", f"addresses of {host}", found.errors)
    return CheckResult(
        "dns.server-address",
        Status.FAIL,
        f"the outbound server {host} has no address (A/AAAA)",
        detail=", ".join(f"{a.rdtype} {a.outcome.value}" for a in found.answers),
        fix=f"publish: {fqdn(host)} A <the server's IPv4 address> (and AAAA for IPv6), or set "
        "outbound.host in the profile to the server's correct name",
    )


async def _confirm(ctx: CheckContext, address: str) -> tuple[str, str, list[str], list[str]]:
    """(address, verdict, ptr names, errors); verdict is confirmed|unconfirmed|none|error."""
    import dns.reversename

    name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    ptr = await ctx.resolver.query(name, "PTR")
    if ptr.outcome is DnsOutcome.ERROR:
        return address, "error", [], [ptr.error]
    if ptr.void:
        return address, "none", [], []
    names = [r.rstrip(".") for r in ptr.records]
    rdtype = "AAAA" if ":" in address else "A"
    forwards = await asyncio.gather(*(ctx.resolver.query(n, rdtype) for n in names))
    import ipaddress

    wanted = ipaddress.ip_address(address)
    for forward in forwards:
        if any(ipaddress.ip_address(r) == wanted for r in forward.records):
            return address, "confirmed", names, []
    errors = [f.error for f in forwards if f.outcome is DnsOutcome.ERROR]
    return address, "error" if errors else "unconfirmed", names, errors


async def check_reverse(ctx: CheckContext, entry: SupportAddress) -> CheckResult:
    reason = no_server_reason(entry)
    if reason:
        return skipped("dns.reverse", reason, NO_SERVER_FIX)
    assert entry.outbound is not None
    found = await server_addresses(ctx, entry.outbound.host)
    if not found.addresses:
        return skipped(
            "dns.reverse",
            f"dns.server-address found no address for {entry.outbound.host}",
            "fix dns.server-address first",
        )
    import dns.reversename

    results = await asyncio.gather(*(_confirm(ctx, a) for a in found.addresses))
    lines = [
        f"{a}: {verdict}" + (f" (PTR {', '.join(n)})" if n else "") for a, verdict, n, _ in results
    ]
    detail = "; ".join(lines)
    if all(verdict == "confirmed" for _, verdict, _, _ in results):
        return CheckResult(
            "dns.reverse", Status.PASS, "every server address has a forward-confirmed PTR", detail
        )
    fixes = []
    host = entry.outbound.host if not found.literal else "<the server's host name>"
    for address, verdict, names, _ in results:
        reverse_name = dns.reversename.from_address(address).to_text()
        if verdict == "none":
            fixes.append(
                f"ask the owner of {address} (your hosting provider or ISP) to publish: "
                f"{reverse_name} PTR {fqdn(host)}"
            )
        elif verdict == "unconfirmed":
            rdtype = "AAAA" if ":" in address else "A"
            fixes.append(
                f"publish: {fqdn(names[0])} {rdtype} {address} (or change the PTR of {address} "
                f"to a name that resolves to it: {reverse_name} PTR {fqdn(host)})"
            )
    if not fixes:
        return could_not_tell(
            "dns.reverse", "PTR of the server's addresses", [e for *_, es in results for e in es]
        )
    return CheckResult(
        "dns.reverse",
        Status.FAIL,
        "not every server address has a forward-confirmed PTR",
        detail,
        fix="; ".join(fixes),
    )
