"""``dns.blocklist``: is the outbound server (or the address a roundtrip saw the mail leave from)
on a DNS blocklist that receivers consult?

A DNSBL is asked for the address with its octets (IPv4) or nibbles (IPv6) reversed under the
list's zone (RFC 5782 §2): NXDOMAIN means not listed, an A record in 127.0.0.0/8 is a listing
whose last octets say why. Two answers must never read as a listing:

* the list's own error codes: Spamhaus answers 127.255.255.252 (malformed query),
  127.255.255.254 (asked through a public or open resolver: Spamhaus refuses those) and
  127.255.255.255 (too many queries); other lists use 127.255.255.0/24 the same way;
* an answer outside 127.0.0.0/8 (a resolver that rewrites NXDOMAIN into an advertising address).

Those, and questions that time out or are refused, are ``error`` ("could not tell"), never
``fail``. Private addresses (RFC 1918, link-local, ULA) are not asked: lists judge the public
address the mail leaves from (``--egress-address``). Loopback addresses are asked, since
127.0.0.2 is every list's test entry (RFC 5782 §5).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from smtpconn.checks import catalogue
from smtpconn.checks.common import could_not_tell, no_server_reason, server_addresses, skipped
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.dns import DnsOutcome
from smtpconn.errors import UsageError
from smtpconn.profile.model import SupportAddress

IDS = catalogue.BLOCKLIST
CHECK_ID = IDS[0]

#: Answers in this network are a list's error codes, not listings.
ERROR_NET = ipaddress.ip_network("127.255.255.0/24")
LISTING_NET = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class Blocklist:
    zone: str
    name: str
    delist: str  # where a listed operator asks for removal
    codes: dict[str, str] = field(default_factory=dict)  # answer -> what the listing means
    errors: dict[str, str] = field(default_factory=dict)  # answer -> why it could not tell
    refuses_public_resolvers: bool = False


_SPAMHAUS_ERRORS = {
    "127.255.255.252": "the query was malformed (a typo in the list name)",
    "127.255.255.254": "Spamhaus refuses queries sent through public or open resolvers "
    "(8.8.8.8, 1.1.1.1, 9.9.9.9, most ISP resolvers)",
    "127.255.255.255": "too many queries from this resolver (rate limited)",
}

DEFAULT_BLOCKLISTS: tuple[Blocklist, ...] = (
    Blocklist(
        "zen.spamhaus.org",
        "Spamhaus ZEN",
        "https://check.spamhaus.org/",
        {
            "127.0.0.2": "SBL: a known spam source",
            "127.0.0.3": "SBL CSS: snowshoe spam",
            "127.0.0.4": "XBL: an infected or hijacked host",
            "127.0.0.5": "XBL: an infected or hijacked host",
            "127.0.0.6": "XBL: an infected or hijacked host",
            "127.0.0.7": "XBL: an infected or hijacked host",
            "127.0.0.9": "SBL DROP: a hijacked network",
            "127.0.0.10": "PBL: an end-user address that should not send mail directly (ISP)",
            "127.0.0.11": "PBL: an end-user address that should not send mail directly",
        },
        _SPAMHAUS_ERRORS,
        refuses_public_resolvers=True,
    ),
    Blocklist(
        "b.barracudacentral.org",
        "Barracuda BRBL",
        "https://www.barracudacentral.org/rbl/removal-request",
        {"127.0.0.2": "listed for sending spam"},
    ),
    Blocklist(
        "bl.spamcop.net",
        "SpamCop",
        "https://www.spamcop.net/bl.shtml",
        {"127.0.0.2": "reported by SpamCop users (entries expire 24 h after the last report)"},
    ),
    Blocklist(
        "psbl.surriel.com",
        "PSBL",
        "https://psbl.org/remove",
        {"127.0.0.2": "sent mail to PSBL spam traps"},
    ),
    Blocklist(
        "bl.mailspike.net",
        "Mailspike",
        "https://mailspike.org/anubis/lookup.html",
        {"127.0.0.2": "poor sending reputation"},
    ),
    Blocklist(
        "ix.dnsbl.manitu.net",
        "NiX Spam",
        "https://www.nixspam.net/lookup.php",
        {"127.0.0.2": "sent spam seen by NiX Spam"},
    ),
)

KNOWN = {b.zone: b for b in DEFAULT_BLOCKLISTS}


def parse_blocklists(specs: Iterable[str], source: str) -> tuple[Blocklist, ...]:
    """``ZONE`` or ``ZONE=DELISTING-URL`` each; a known zone keeps its codes. Empty: the
    defaults."""
    lists: list[Blocklist] = []
    for spec in (s.strip() for text in specs for s in text.split(",")):
        if not spec:
            continue
        zone, _, delist = spec.partition("=")
        zone = zone.strip().lower().rstrip(".")
        labels = zone.split(".")
        if len(labels) < 2 or not all(labels) or any(" " in label for label in labels):
            raise UsageError(
                f"{source}: {spec!r} is not a blocklist zone",
                fix="give ZONE or ZONE=DELISTING-URL, e.g. zen.spamhaus.org or "
                "bl.example.net=https://bl.example.net/remove",
            )
        known = KNOWN.get(zone)
        base = known or Blocklist(zone, zone, f"the list's website ({zone})")
        lists.append(
            Blocklist(
                zone,
                base.name,
                delist.strip() or base.delist,
                base.codes,
                base.errors,
                base.refuses_public_resolvers,
            )
        )
    return tuple(lists) or DEFAULT_BLOCKLISTS


def query_name(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        labels = reversed(ip.exploded.split("."))
    else:
        labels = reversed(ip.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone


def asked(address: str) -> bool:
    """Lists judge public addresses (and hold their test entries on loopback)."""
    ip = ipaddress.ip_address(address)
    return ip.is_global or ip.is_loopback


@dataclass(frozen=True)
class Verdict:
    address: str
    blocklist: Blocklist
    listed: tuple[str, ...] = ()  # meanings
    unknown: str = ""  # why we could not tell
    reason: str = ""  # the list's TXT, when listed


async def look_up(ctx: CheckContext, address: str, blocklist: Blocklist) -> Verdict:
    name = query_name(address, blocklist.zone)
    answer = await ctx.resolver.query(name, "A")
    if answer.outcome in (DnsOutcome.NXDOMAIN, DnsOutcome.NODATA):
        return Verdict(address, blocklist)
    if answer.outcome is DnsOutcome.ERROR:
        return Verdict(address, blocklist, unknown=f"no answer ({answer.error})")
    return await _judge_codes(ctx, name, address, blocklist, answer.records)


async def _judge_codes(
    ctx: CheckContext, name: str, address: str, blocklist: Blocklist, codes: tuple[str, ...]
) -> Verdict:
    listed, unknown = [], []
    for code in codes:
        ip = ipaddress.ip_address(code)
        if code in blocklist.errors or ip in ERROR_NET:
            unknown.append(
                f"the list answered {code}: {blocklist.errors.get(code, 'an error code (query refused or rate limited)')}"
            )
        elif ip not in LISTING_NET:
            unknown.append(
                f"the answer {code} is outside 127.0.0.0/8, not a listing: the resolver "
                "rewrites unknown names (NXDOMAIN) into an address"
            )
        else:
            listed.append(f"{code} ({blocklist.codes.get(code, 'listed')})")
    if not listed:
        return Verdict(address, blocklist, unknown="; ".join(unknown))
    txt = await ctx.resolver.query(name, "TXT")
    return Verdict(
        address, blocklist, tuple(listed), reason=" ".join(txt.records) if txt.ok else ""
    )


async def check_blocklist(ctx: CheckContext, entry: SupportAddress) -> CheckResult:
    reason = no_server_reason(entry)
    if reason or entry.outbound is None:
        return skipped(CHECK_ID, reason or "no outbound server", "nothing to look up")
    server = await server_addresses(ctx, entry.outbound.host)
    candidates = list(dict.fromkeys([*server.addresses, *ctx.settings.egress_addresses]))
    if not candidates:
        if server.errors:
            return could_not_tell(CHECK_ID, f"the addresses of {server.host}", server.errors)
        return skipped(CHECK_ID, f"{server.host} has no address", "fix dns.server-address first")
    addresses = [a for a in candidates if asked(a)]
    private = [a for a in candidates if not asked(a)]
    if not addresses:
        return skipped(
            CHECK_ID,
            f"{', '.join(private)} {'is a private address' if len(private) == 1 else 'are private addresses'}: "
            "blocklists judge the public address your mail leaves from",
            "give that address: smtpconn verify --egress-address IP (send-test --direction "
            "roundtrip shows it as the sending server)",
        )
    lists = parse_blocklists(ctx.settings.blocklists, "blocklists")
    verdicts = await asyncio.gather(*(look_up(ctx, a, b) for a in addresses for b in lists))
    return judge(verdicts, addresses, lists, private)


def judge(
    verdicts: Iterable[Verdict],
    addresses: list[str],
    lists: tuple[Blocklist, ...],
    private: list[str] | None = None,
) -> CheckResult:
    """fail when a list lists an address; else error when a list could not tell; else pass."""
    verdicts = list(verdicts)
    listed = [v for v in verdicts if v.listed]
    unknown = [v for v in verdicts if v.unknown and not v.listed]
    detail = "\n".join(
        f"{v.address} on {v.blocklist.zone}: "
        + (
            "listed " + ", ".join(v.listed) + (f" ({v.reason})" if v.reason else "")
            if v.listed
            else v.unknown or "not listed"
        )
        for v in verdicts
    )
    if private:
        detail += f"\nnot asked (private): {', '.join(private)}"
    if listed:
        return CheckResult(
            CHECK_ID,
            Status.FAIL,
            "listed: "
            + "; ".join(
                f"{v.address} on {v.blocklist.name} ({', '.join(v.listed)})" for v in listed
            ),
            detail,
            fix="stop what got the address listed (an open relay, a compromised account or "
            "host, bulk mail without consent), then ask for removal: "
            + "; ".join(dict.fromkeys(f"{v.blocklist.name}: {v.blocklist.delist}" for v in listed)),
        )
    names = ", ".join(f"{a}" for a in addresses)
    if unknown:
        public = any(v.blocklist.refuses_public_resolvers for v in unknown)
        return CheckResult(
            CHECK_ID,
            Status.ERROR,
            "could not tell whether "
            + names
            + " is listed on "
            + ", ".join(dict.fromkeys(v.blocklist.name for v in unknown)),
            detail,
            fix="ask through a resolver of your own (--resolver HOST[:PORT]), not a public one"
            + (
                ": Spamhaus refuses queries that come through public resolvers (8.8.8.8, "
                "1.1.1.1, 9.9.9.9) and answers them with an error code"
                if public
                else ""
            )
            + ", then run verify again",
        )
    return CheckResult(
        CHECK_ID,
        Status.PASS,
        f"{names} on none of {len(lists)} blocklists ({', '.join(b.name for b in lists)})",
        detail,
    )


async def run_blocklist(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    return [await check_blocklist(ctx, entry)]
