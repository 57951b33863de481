"""An in-run DNS cache over dnspython's async resolver; its answers are classified
(:mod:`smtpconn.dns.answers`) so that "no such record" stays apart from "could not tell".

Each (name, type) question is asked once per run, however many addresses need it; concurrent
askers share the in-flight query. There is no cache between runs: verify must see DNS as it is.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from smtpconn.dns.answers import DnsAnswer, DnsOutcome

if TYPE_CHECKING:
    import dns.asyncresolver


def _txt_join(rdata: object) -> str:
    strings = getattr(rdata, "strings", ())
    return b"".join(strings).decode("utf-8", errors="replace")


class CachingResolver:
    def __init__(
        self, resolver: dns.asyncresolver.Resolver, *, max_in_flight: int | None = None
    ) -> None:
        self._resolver = resolver
        # A run over hundreds of domains would otherwise fire thousands of UDP questions at
        # once; resolvers (and socket buffers) drop such bursts and we would report timeouts.
        self._limit = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._cache: dict[tuple[str, str], asyncio.Task[DnsAnswer]] = {}
        self.questions: Counter[tuple[str, str]] = Counter()  # questions sent upstream

    @property
    def description(self) -> str:
        servers = [str(ns) for ns in self._resolver.nameservers]
        return ", ".join(servers) or "the system resolver"

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        key = (name.lower().rstrip("."), rdtype.upper())
        task = self._cache.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask(*key))
            self._cache[key] = task
        return await asyncio.shield(task)

    async def _ask(self, name: str, rdtype: str) -> DnsAnswer:
        if self._limit is not None:
            async with self._limit:
                return await self._ask_now(name, rdtype)
        return await self._ask_now(name, rdtype)

    async def _ask_now(self, name: str, rdtype: str) -> DnsAnswer:
        import dns.exception
        import dns.rdatatype
        import dns.resolver

        self.questions[(name, rdtype)] += 1
        try:
            answer = await self._resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(name, rdtype, DnsOutcome.NXDOMAIN)
        except dns.resolver.NoNameservers as exc:
            return DnsAnswer(
                name,
                rdtype,
                DnsOutcome.ERROR,
                error=f"no nameserver answered ({self.description}): {exc}",
            )
        except dns.exception.Timeout:
            return DnsAnswer(
                name,
                rdtype,
                DnsOutcome.ERROR,
                error=f"timed out asking {self.description} for {name} {rdtype}",
            )
        except dns.exception.DNSException as exc:
            return DnsAnswer(
                name,
                rdtype,
                DnsOutcome.ERROR,
                error=f"{type(exc).__name__} from {self.description}: {exc}",
            )
        if answer.rrset is None:
            return DnsAnswer(name, rdtype, DnsOutcome.NODATA)
        if dns.rdatatype.from_text(rdtype) == dns.rdatatype.TXT:
            records = tuple(_txt_join(r) for r in answer.rrset)
        else:
            records = tuple(r.to_text() for r in answer.rrset)
        return DnsAnswer(name, rdtype, DnsOutcome.OK, records=records)
