"""What a DNS question came back with, classified: records, "no such name", "no such record",
or "could not tell" (timeout, SERVFAIL, unreachable); and the :class:`Resolver` every lookup of
smtpconn goes through (the run's :class:`~smtpconn.dns.cache.CachingResolver`, or a test's fake).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from smtpconn.errors import SmtpconnFailure


class DnsOutcome(StrEnum):
    OK = "ok"  # at least one record
    NXDOMAIN = "nxdomain"  # the name does not exist
    NODATA = "nodata"  # the name exists, no record of this type
    ERROR = "error"  # timeout, SERVFAIL, REFUSED, unreachable: we could not tell


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    name: str
    rdtype: str
    outcome: DnsOutcome
    records: tuple[str, ...] = ()  # presentation form; TXT strings joined (RFC 7208 §3.3)
    error: str = ""  # for ERROR: what happened, naming the resolver

    @property
    def ok(self) -> bool:
        return self.outcome is DnsOutcome.OK

    @property
    def void(self) -> bool:
        """RFC 7208 §4.6.4: a lookup that returned no records (NXDOMAIN or NODATA)."""
        return self.outcome in (DnsOutcome.NXDOMAIN, DnsOutcome.NODATA)


class DnsUnavailable(SmtpconnFailure):
    """The resolver could not tell (timeout, SERVFAIL, unreachable)."""


class Resolver(Protocol):
    """Asks one (name, type) question and classifies the answer; never raises for DNS trouble
    (that is :attr:`DnsOutcome.ERROR`, with the reason in :attr:`DnsAnswer.error`)."""

    @property
    def description(self) -> str:
        """Who is asked, for error messages (e.g. ``127.0.0.1:53``)."""
        ...

    async def query(self, name: str, rdtype: str) -> DnsAnswer: ...
