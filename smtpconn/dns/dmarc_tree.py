"""The DMARC DNS tree walk (RFC 9989 §4.10): where a domain's DMARC policy is published, and
which domain is its organisational domain. Verify's dmarc checks and the relay's
Authentication-Results both use it, so they agree on both answers.

From a name of more than 8 labels the walk jumps to its last 7, then drops one label at a time.
We stop at two labels: single-label public-suffix records (psd=y at a TLD) are outside what a
support address needs. No Public Suffix List is needed: a public suffix that publishes
``psd=y`` marks the organisational domain below it.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpconn.dns.answers import DnsOutcome, DnsUnavailable, Resolver
from smtpconn.dns.tags import parse_tags

MAX_WALK_LABELS = 8


def walk_names(domain: str) -> list[str]:
    """The names whose ``_dmarc`` TXT the walk asks for, ``domain`` first."""
    labels = domain.rstrip(".").lower().split(".")
    names = [".".join(labels)]
    rest = labels[1:]
    if len(rest) > MAX_WALK_LABELS - 1:
        rest = rest[-(MAX_WALK_LABELS - 1) :]
    while len(rest) >= 2:
        names.append(".".join(rest))
        rest = rest[1:]
    return names


def is_dmarc(txt: str) -> bool:
    """A TXT record that is a DMARC record (``v=DMARC1`` first; RFC 7489 §6.4)."""
    return txt.replace(" ", "").startswith("v=DMARC1")


@dataclass(frozen=True, slots=True)
class PolicyLookup:
    domain: str  # the domain the walk started from
    at: str | None  # the first name on the walk with DMARC records (None: none, or error)
    records: tuple[str, ...] = ()  # the DMARC records there; more than one means none applies
    error: str = ""  # set when a lookup could not tell; the walk stopped there
    asked: tuple[str, ...] = ()  # the names whose _dmarc TXT was asked, in order

    @property
    def inherited(self) -> bool:
        """The record is the organisational domain's: its ``sp=`` (else ``p=``) applies."""
        return self.at is not None and self.at != self.domain


async def find_policy(resolver: Resolver, domain: str) -> PolicyLookup:
    """RFC 9989 §4.10.1 policy discovery: the first name on the walk that publishes DMARC."""
    start = domain.rstrip(".").lower()
    asked: list[str] = []
    for name in walk_names(start):
        asked.append(name)
        answer = await resolver.query(f"_dmarc.{name}", "TXT")
        if answer.outcome is DnsOutcome.ERROR:
            return PolicyLookup(start, None, error=answer.error, asked=tuple(asked))
        records = tuple(r for r in answer.records if is_dmarc(r))
        if records:
            return PolicyLookup(start, name, records, asked=tuple(asked))
    return PolicyLookup(start, None, asked=tuple(asked))


async def organizational_domain(resolver: Resolver, domain: str) -> str:
    """RFC 9989 §4.10.2: the name with ``psd=n``; else the name below one with ``psd=y``; else
    the name with the fewest labels that publishes DMARC; else ``domain`` itself.

    Raises :class:`DnsUnavailable` when a lookup could not tell.
    """
    start = domain.rstrip(".").lower()
    labels = start.split(".")
    found = start
    for name in walk_names(start):
        psd = await _psd_tag(resolver, name)
        if psd is None:
            continue
        if psd == "n":
            return name
        if psd == "y" and name != start:
            return ".".join(labels[-(name.count(".") + 2) :])
        found = name
    return found


async def _psd_tag(resolver: Resolver, name: str) -> str | None:
    """The ``psd=`` value of the one DMARC record at ``_dmarc.<name>`` ("" when absent); None
    when there is no single record."""
    answer = await resolver.query(f"_dmarc.{name}", "TXT")
    if answer.outcome is DnsOutcome.ERROR:
        raise DnsUnavailable(answer.error)
    records = [r for r in answer.records if is_dmarc(r)]
    if len(records) != 1:
        return None
    return parse_tags(records[0]).get("psd", "").lower()


async def aligned(resolver: Resolver, identifier: str, author: str, *, strict: bool) -> bool:
    """DMARC identifier alignment (RFC 9989 §4.4): strict means the same domain, relaxed the same
    organisational domain. Raises :class:`DnsUnavailable` when a lookup could not tell."""
    a, b = identifier.rstrip(".").lower(), author.rstrip(".").lower()
    if a == b:
        return True
    # An organisational domain has at least two labels (the walk stops there), so domains that
    # differ in their last two cannot share one: no need to ask.
    if strict or a.split(".")[-2:] != b.split(".")[-2:]:
        return False
    return await organizational_domain(resolver, a) == await organizational_domain(resolver, b)
