"""The blocking twin of :class:`~smtpconn.dns.cache.CachingResolver`, for libraries that only
know blocking DNS (pyspf, dkimpy).

Those libraries run in worker threads (never on the event loop); each lookup they make is handed
back to the loop thread and answered by the same Resolver the async code uses. So
``--resolver`` applies to them too, and a question the async checks already asked is not asked
again.

pyspf resolves through the module-global ``spf.DNSLookup``. We install one dispatcher in its
place, once, which uses the bridge bound to the *current thread* and falls back to pyspf's own
lookup only in threads that never bound one (code outside verify and the relay's
Authentication-Results keeps working unchanged).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from smtpconn.dns.answers import DnsAnswer, DnsOutcome, Resolver


class SyncDns:
    """Blocking lookups for worker threads; must not be called on the loop's own thread."""

    def __init__(self, resolver: Resolver, loop: asyncio.AbstractEventLoop) -> None:
        self._resolver = resolver
        self._loop = loop
        self._closed = threading.Event()

    def close(self) -> None:
        """After the run (or its deadline): threads still working get "could not tell" at once
        instead of keeping the loop busy with new questions."""
        self._closed.set()

    def query(self, name: str, rdtype: str, timeout: float | None = None) -> DnsAnswer:
        if self._closed.is_set():
            return DnsAnswer(name, rdtype, DnsOutcome.ERROR, error="the run ended (deadline)")
        future = asyncio.run_coroutine_threadsafe(self._resolver.query(name, rdtype), self._loop)
        return future.result(timeout)

    # -- pyspf ---------------------------------------------------------------------------

    def spf_lookup(self, name: str, qtype: str, *_: Any, **__: Any) -> list[tuple[Any, Any]]:
        """pyspf's ``DNSLookup`` contract: ``[((name, type), value), ...]``; ``[]`` for no
        records; ``spf.TempError`` when we could not tell (pyspf turns it into temperror)."""
        import spf

        answer = self.query(name, qtype)
        if answer.outcome is DnsOutcome.ERROR:
            raise spf.TempError(f"DNS {answer.error}")
        key: tuple[str, str] = (name, qtype)
        if qtype in ("TXT", "SPF"):
            return [(key, [r.encode("utf-8")]) for r in answer.records]
        if qtype == "MX":
            out: list[tuple[Any, Any]] = []
            for record in answer.records:
                preference, _sep, exchange = record.partition(" ")
                out.append((key, (int(preference), exchange.rstrip("."))))
            return out
        if qtype == "PTR":
            return [(key, r.rstrip(".")) for r in answer.records]
        return [(key, r) for r in answer.records]

    # -- dkimpy --------------------------------------------------------------------------

    def dkim_txt(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc`` contract: the first TXT record as bytes, or None."""
        import dkim

        text = name.decode("ascii") if isinstance(name, bytes) else name
        answer = self.query(text, "TXT")
        if answer.outcome is DnsOutcome.ERROR:
            raise dkim.DnsTimeoutError(answer.error)
        return answer.records[0].encode("utf-8") if answer.records else None


_local = threading.local()
_install_lock = threading.Lock()
_original_spf_lookup: Callable[..., Any] | None = None


def _spf_dispatch(name: str, qtype: str, *args: Any, **kwargs: Any) -> Any:
    bridge: SyncDns | None = getattr(_local, "bridge", None)
    if bridge is None:
        assert _original_spf_lookup is not None
        return _original_spf_lookup(name, qtype, *args, **kwargs)
    return bridge.spf_lookup(name, qtype, *args, **kwargs)


def _install_spf_dispatch() -> None:
    global _original_spf_lookup
    import spf

    with _install_lock:
        if spf.DNSLookup is not _spf_dispatch:
            _original_spf_lookup = spf.DNSLookup
            spf.DNSLookup = _spf_dispatch


@contextmanager
def bound(bridge: SyncDns) -> Iterator[SyncDns]:
    """Within this block (in this thread), pyspf's lookups go through ``bridge``."""
    _install_spf_dispatch()
    previous = getattr(_local, "bridge", None)
    _local.bridge = bridge
    try:
        yield bridge
    finally:
        _local.bridge = previous
