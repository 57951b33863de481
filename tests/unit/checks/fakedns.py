"""A :class:`~smtpconn.dns.Resolver` answering from a dict, for unit tests (no sockets)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from smtpconn.checks.model import CheckContext
from smtpconn.dns import DnsAnswer, DnsOutcome
from smtpconn.settings import Settings


class FakeResolver:
    """``records[(name, type)] = [...]``; a name present under any type is NODATA for others,
    an absent name NXDOMAIN; ``broken`` names are ERROR (could not tell)."""

    description = "fake"

    def __init__(
        self, records: dict[tuple[str, str], list[str]], broken: set[str] | None = None
    ) -> None:
        self.records = {(n.lower(), t): v for (n, t), v in records.items()}
        self.broken = broken or set()
        self.questions: Counter[tuple[str, str]] = Counter()

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        name = name.lower().rstrip(".")
        self.questions[(name, rdtype)] += 1
        if name in self.broken:
            return DnsAnswer(name, rdtype, DnsOutcome.ERROR, error=f"SERVFAIL for {name}")
        values = self.records.get((name, rdtype))
        if values:
            return DnsAnswer(name, rdtype, DnsOutcome.OK, tuple(values))
        if any(n == name for n, _ in self.records):
            return DnsAnswer(name, rdtype, DnsOutcome.NODATA)
        return DnsAnswer(name, rdtype, DnsOutcome.NXDOMAIN)


def context(fake: FakeResolver, **settings: Any) -> CheckContext:
    return CheckContext(settings=Settings(timeout=2, **settings), base_dir=Path("/"), resolver=fake)
