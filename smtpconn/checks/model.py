"""The vocabulary of ``verify``: statuses, results, and the context every check runs in.

Statuses never lie, so that a pass can be trusted and a failure acted on: ``fail`` means we know something is wrong, ``error``
means we could not tell (timeout, SERVFAIL, refused connection), ``skip`` means the check could not
run because an earlier one failed, and every non-pass result says how to fix it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from smtpconn.dns import Resolver
from smtpconn.settings import Settings

T = TypeVar("T")


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CheckResult:
    id: str  # stable id from the catalogue, e.g. "spf.record"
    status: Status
    summary: str  # one line for the table
    detail: str = ""  # the evidence: records seen, replies, counts
    fix: str = ""  # exactly what to do; required for every non-pass result

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "summary": self.summary,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass
class CheckContext:
    """What checks share within one run: settings, the caching resolver, and run-once memos so
    that work common to several addresses (one SMTP session per server, one SPF evaluation per
    domain) happens once."""

    settings: Settings
    base_dir: Path  # the profile's folder, for file: references
    resolver: Resolver
    transcript: Callable[[str], None] | None = None  # -v output; callers redact secrets
    _memo: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)

    async def once(self, key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
        """Run ``factory`` once per ``key`` in this run; concurrent callers await the same
        result (or the same exception)."""
        future = self._memo.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._memo[key] = future
            try:
                future.set_result(await factory())
            except BaseException as exc:
                future.set_exception(exc)
                # Mark retrieved so an unobserved failure does not log "exception never retrieved".
                future.exception()
                raise
        result: T = await asyncio.shield(future)
        return result
