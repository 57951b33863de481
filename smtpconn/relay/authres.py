"""``Authentication-Results`` (RFC 8601) for an inbound message: SPF of the connecting client for
the MAIL FROM domain (pyspf), DKIM signatures (dkimpy), DMARC of the From domain.

Both libraries are synchronous, so SPF and DKIM run in a worker thread; the whole evaluation is
bounded by a deadline, and what does not finish in time is reported as ``temperror`` rather than
holding mail. Their lookups go through the same bridge verify uses (:mod:`smtpconn.dns.sync`):
handed back to the event loop and answered by a CachingResolver over
``dns.resolvers.make_resolver``, so ``--resolver`` means the same here as everywhere, and pyspf is
redirected only in the worker thread that evaluates (no process-wide DNS switch).

It is evaluated when the message is handed to the sink, not before the ``250``: acknowledging a
message never waits for DNS.

A customer's server sends message after message from the same IP with the same HELO and MAIL
FROM: the SPF result of that triple and the From domain's DMARC policy are kept for
``SPF_CACHE_TTL`` seconds (:class:`RecentResults`), and a message that carries neither a DKIM signature nor an ARC set needs no dkimpy at all, so such
a message is evaluated without a worker thread (benchmarks/README.md, "Bottlenecks" 10).

DMARC (policy discovery and the organisational domain for relaxed alignment) is the RFC 9989 tree
walk of :mod:`smtpconn.dns.dmarc_tree`, the one verify uses: for ``help.example.co.uk`` the policy
is found at ``_dmarc.help.example.co.uk`` or ``_dmarc.example.co.uk``, never guessed from the last
two labels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses
from typing import TYPE_CHECKING, Generic, TypeVar

from smtpconn.dns import DnsUnavailable, Resolver
from smtpconn.dns.dmarc_tree import PolicyLookup, aligned, find_policy
from smtpconn.dns.resolvers import make_resolver
from smtpconn.dns.sync import SyncDns, bound
from smtpconn.dns.tags import parse_tags
from smtpconn.message.escaping import escape_controls
from smtpconn.message.headers import split_header_block, unfold
from smtpconn.relay.arc import ArcVerdict, has_arc, verdict_of

if TYPE_CHECKING:
    import dns.asyncresolver

DNS_CACHE_SIZE = 4096  # (name, type) answers; bounded so a flood of sender domains cannot grow it
# How long an SPF result (and a From domain's DMARC policy) is reused for the same (client IP, sender, HELO): a record changed at
# the sender's DNS is seen this much later than its TTL alone would make it. Short, so it spans
# a busy session's messages rather than a day.
SPF_CACHE_TTL = 30.0
SPF_CACHE_SIZE = 1024  # triples; a flood of senders cannot grow it
# Results that depend on a DNS server's mood, not on the records: never reused.
_NOT_KEPT = frozenset({"temperror"})


def relay_resolver(
    resolvers: tuple[tuple[str, int], ...], timeout: float
) -> dns.asyncresolver.Resolver:
    """The resolver the relay evaluates inbound mail with.

    Unlike verify (which must see DNS as it is now), the relay sees the same few sender domains
    all day: answers are kept for their TTL (negative ones too, RFC 2308) as any MTA's resolver
    does. Without it the SPF/DKIM/DMARC lookups of every message were the largest CPU cost of
    inbound delivery (benchmarks/README.md)."""
    # Here, not at the top: smtpconn.dns (imported above) must switch dnspython's DNS over
    # HTTPS off before any dns.* module loads, or importing this module pulls in httpx2 and h2.
    import dns.resolver

    resolver = make_resolver(resolvers, timeout=timeout)
    resolver.cache = dns.resolver.LRUCache(DNS_CACHE_SIZE)
    return resolver


@dataclass(frozen=True, slots=True)
class AuthInput:
    client_ip: str
    helo: str
    mail_from: str
    message: bytes


_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ADDR = re.compile(
    r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+@)?[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?"
)


def pvalue(text: str) -> str:
    """A property value (RFC 8601 ``pvalue``) from client-supplied text: as it is when it is a
    plain token, domain or ``local@domain``, otherwise an escaped quoted-string, so a HELO name,
    a sender, a From domain or a signature's d= can never add a result of its own (``x;
    dkim=pass``) or break the line."""
    if text and (_ADDR.fullmatch(text) or _TOKEN.fullmatch(text)):
        return text
    return '"' + escape_controls(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(text: str) -> str:
    """Text for inside a ``( … )`` comment: no parentheses, backslashes or controls."""
    # A backslash would quote the closing parenthesis; escapes stay readable without it (x1b).
    return re.sub(r"[()\\]", "", escape_controls(text))


def spf_sender(mail_from: str, helo: str) -> str:
    """The identity SPF checks: MAIL FROM, or ``postmaster@<HELO>`` for the null sender
    (RFC 7208 §2.4)."""
    return mail_from or f"postmaster@{helo}"


@dataclass(frozen=True, slots=True)
class AuthVerdicts:
    spf: str
    spf_domain: str
    dkim: list[tuple[str, str]]  # (result, d= domain)
    dmarc: str
    dmarc_policy: str | None
    from_domain: str | None
    spf_helo: str | None = None  # set for the null sender: SPF checked postmaster@<HELO>
    arc: ArcVerdict | None = None  # None: the message carries no ARC set
    author_problem: str | None = None  # why there is no single From author domain (then None)

    def header(self, authserv_id: str, client_ip: str) -> str:
        parts = [authserv_id]
        spf = f"spf={self.spf} smtp.mailfrom={pvalue(self.spf_domain) if self.spf_domain else '<>'}"
        if self.spf_helo is not None:
            spf += f" smtp.helo={pvalue(self.spf_helo)}"
        parts.append(f"{spf} (client-ip={comment(client_ip)})")
        if self.dkim:
            parts += [f"dkim={result} header.d={pvalue(domain)}" for result, domain in self.dkim]
        else:
            parts.append("dkim=none")
        dmarc = f"dmarc={self.dmarc}"
        if self.dmarc_policy:
            dmarc += f" (p={comment(self.dmarc_policy)})"
        if self.from_domain:
            dmarc += f" header.from={pvalue(self.from_domain)}"
        parts.append(dmarc)
        if self.arc is not None:
            arc = f"arc={self.arc.cv}"
            if self.arc.sealer:
                arc += f" (sealed by {comment(self.arc.sealer)})"
            parts.append(arc)
        return "Authentication-Results: " + ";\r\n\t".join(parts)


@dataclass(frozen=True, slots=True)
class SpfDkim:
    spf: str
    dkim: list[tuple[str, str]]  # (result, d= domain)
    arc: ArcVerdict | None = None


SpfKey = tuple[str, str, str]  # (client IP, SPF sender, HELO)
K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Results of the last ``ttl`` seconds, least recently used first out. Only touched on the
    event loop's thread."""

    def __init__(
        self,
        ttl: float = SPF_CACHE_TTL,
        size: int = SPF_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._results: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._results.get(key)
        if found is None:
            return None
        if self._clock() - found[0] >= self.ttl:
            del self._results[key]
            return None
        self._results.move_to_end(key)
        return found[1]

    def put(self, key: K, value: V) -> None:
        self._results[key] = (self._clock(), value)
        self._results.move_to_end(key)
        while len(self._results) > self.size:
            self._results.popitem(last=False)


@dataclass(frozen=True, slots=True)
class RecentResults:
    """What the messages of a busy sender share for ``SPF_CACHE_TTL`` seconds: the SPF result of
    a (client IP, sender, HELO) and the DMARC policy found for a From domain. Results that
    depend on a DNS server's mood (``temperror``, a walk that could not tell) are not kept."""

    spf: Recent[SpfKey, str] = dataclasses.field(default_factory=Recent)
    policies: Recent[str, PolicyLookup] = dataclasses.field(default_factory=Recent)

    def keep_spf(self, key: SpfKey, result: str) -> None:
        if result not in _NOT_KEPT:
            self.spf.put(key, result)

    async def policy(self, resolver: Resolver, domain: str) -> PolicyLookup:
        found = self.policies.get(domain)
        if found is None:
            found = await find_policy(resolver, domain)
            if not found.error:
                self.policies.put(domain, found)
        return found


@dataclass(frozen=True, slots=True)
class _Needs:
    """What a message needs evaluated in a worker thread."""

    spf: str | None  # the SPF result when already known, else None
    dkim: bool  # it may carry a DKIM signature
    arc: bool  # it carries an ARC set

    @property
    def thread(self) -> bool:
        return self.spf is None or self.dkim or self.arc


def _needs(message: bytes, spf: str | None) -> _Needs:
    # One case-insensitive scan of everything dkimpy could read as headers: a signature or a
    # seal cannot be missing from it (the header parsers only decide on what is there). The
    # body is not scanned: this runs on the event loop, and a message may be megabytes.
    folded = message[: _header_end(message)].lower()
    dkim = b"dkim-signature" in folded
    return _Needs(spf, dkim, b"arc-seal" in folded and has_arc(message))


def _header_end(message: bytes) -> int:
    """Where dkimpy's header parser stops at the latest: it splits lines at LF or CRLF and ends
    the headers at the first empty line, so no header it reads lies past the first LF that is
    followed by LF or CRLF (a message starting with an empty line has no headers at all)."""
    ends = [i for i in (message.find(b"\n\n"), message.find(b"\n\r\n")) if i >= 0]
    return min(ends) + 1 if ends else len(message)


def _spf(inp: AuthInput, timeout: float, dns: SyncDns) -> str:
    import spf

    sender = spf_sender(inp.mail_from, inp.helo)
    try:
        with bound(dns):
            spf_result, _explanation = spf.check2(
                i=inp.client_ip, s=sender, h=inp.helo or "unknown", querytime=timeout
            )
    except Exception:  # pyspf raises on malformed input; that is a policy error, not ours
        spf_result = "permerror"
    return str(spf_result)


def check_spf_dkim(
    inp: AuthInput, timeout: float, dns: SyncDns, needs: _Needs | None = None
) -> SpfDkim:
    """SPF and DKIM, synchronously, in a worker thread (never on the loop's thread: every lookup
    is answered there); call it through :func:`authentication_results`. ``needs`` says what is
    already known (an SPF result) and what the message cannot need (dkimpy without a signature
    or seal)."""
    needs = needs or _Needs(None, True, True)
    spf_result = needs.spf if needs.spf is not None else _spf(inp, timeout, dns)
    arc = check_arc(inp.message, timeout, dns) if needs.arc else None
    if not needs.dkim:
        return SpfDkim(spf_result, [], arc)
    return SpfDkim(spf_result, _dkim(inp, timeout, dns), arc)


def _dkim(inp: AuthInput, timeout: float, dns: SyncDns) -> list[tuple[str, str]]:
    import dkim

    dkim_results: list[tuple[str, str]] = []
    try:
        signer = dkim.DKIM(inp.message, timeout=int(max(1, timeout)))
        count = sum(1 for name, _ in signer.headers if name.lower() == b"dkim-signature")
        for index in range(min(count, 5)):
            signer = dkim.DKIM(inp.message, timeout=int(max(1, timeout)))
            try:
                ok = signer.verify(idx=index, dnsfunc=dns.dkim_txt)
                result = "pass" if ok else "fail"
            except dkim.DnsTimeoutError:
                result = "temperror"
            except dkim.DKIMException:
                result = "permerror"
            domain = signer.domain.decode("ascii", "replace") if signer.domain else "unknown"
            dkim_results.append((result, domain))
    except Exception:
        dkim_results.append(("permerror", "unknown"))
    return dkim_results


def check_arc(message: bytes, timeout: float, dns: SyncDns) -> ArcVerdict | None:
    """The ARC chain's validation and its latest sealer's DMARC verdict (None without ARC)."""
    if not has_arc(message):
        return None
    import dkim

    try:
        cv, results, _reason = dkim.arc_verify(
            message, dnsfunc=dns.dkim_txt, timeout=int(max(1, timeout))
        )
    except Exception:  # a malformed set is a failed chain (RFC 8617 §5.2), not our error
        return ArcVerdict("fail", None, None)
    # Sealer and dmarc= from the instance dkimpy verified, never from our own header reading.
    return verdict_of(cv, results)


async def check_dmarc(
    resolver: Resolver, lookup: PolicyLookup, sender_domain: str, found: SpfDkim
) -> tuple[str, str | None]:
    """(dmarc result, the policy that applies) for the From domain ``lookup`` started from."""
    if lookup.error:
        return "temperror", None
    if len(lookup.records) != 1:
        return "none", None  # no record, or several: receivers apply none (RFC 7489 §6.6.3)
    tags = parse_tags(lookup.records[0])
    policy = tags.get("sp") if lookup.inherited and "sp" in tags else tags.get("p")
    author = lookup.domain
    try:
        if found.spf == "pass" and await aligned(
            resolver, sender_domain, author, strict=tags.get("aspf", "r") == "s"
        ):
            return "pass", policy
        for result, domain in found.dkim:
            if result == "pass" and await aligned(
                resolver, domain, author, strict=tags.get("adkim", "r") == "s"
            ):
                return "pass", policy
    except DnsUnavailable:
        return "temperror", policy
    return "fail", policy


async def _known(found: SpfDkim) -> SpfDkim:
    return found


async def evaluate(
    inp: AuthInput,
    timeout: float,
    resolver: Resolver,
    dns: SyncDns,
    recent: RecentResults | None = None,
) -> AuthVerdicts:
    """SPF and DKIM in a worker thread while the From domain's DMARC policy is looked up on the
    loop; then DMARC, which needs both. With ``recent``, a recent SPF result of the same
    client, sender and HELO and a recent policy of the same From domain are reused, and a
    message without a signature or seal then needs no thread at all."""
    sender = spf_sender(inp.mail_from, inp.helo)
    # RFC 8601 §2.7.2: smtp.mailfrom is the domain (or address) SPF evaluated; for the null
    # sender that is postmaster@<HELO>, reported in full beside smtp.helo.
    sender_domain = sender.rpartition("@")[2].lower()
    from_domain, author_problem = author_domain(inp.message)
    key = (inp.client_ip, sender, inp.helo)
    needs = _needs(inp.message, recent.spf.get(key) if recent is not None else None)
    thread = (
        asyncio.to_thread(check_spf_dkim, inp, timeout, dns, needs)
        if needs.thread
        else _known(SpfDkim(str(needs.spf), [], None))
    )
    if from_domain:
        policy_lookup = (
            find_policy(resolver, from_domain)
            if recent is None
            else recent.policy(resolver, from_domain)
        )
        found, lookup = await asyncio.gather(thread, policy_lookup)
        dmarc, policy = await check_dmarc(resolver, lookup, sender_domain, found)
    else:
        found, dmarc, policy = await thread, "none", None
    if recent is not None and needs.spf is None:
        recent.keep_spf(key, found.spf)
    return AuthVerdicts(
        spf=found.spf,
        spf_domain=sender_domain if inp.mail_from else sender,
        dkim=found.dkim,
        dmarc=dmarc,
        dmarc_policy=policy,
        from_domain=from_domain,
        spf_helo=None if inp.mail_from else inp.helo,
        arc=found.arc,
        author_problem=author_problem,
    )


def author_domain(message: bytes) -> tuple[str | None, str | None]:
    """(the one author domain of the From header, None) or (None, why there is not exactly one).

    DMARC (RFC 7489 §6.6.1) is undefined without exactly one author domain and lets a receiver
    reject such a message; several addresses of one domain are that domain."""
    fields, _body = split_header_block(message)
    values = []
    for field in fields:
        name, _, value = field.decode("utf-8", "replace").partition(":")
        if name.strip().lower() == "from":
            values.append(unfold(value))
    if not values:
        return None, "no From header"
    if len(values) > 1:
        return None, f"{len(values)} From headers"
    domains = {a.rpartition("@")[2].lower() for _, a in getaddresses(values) if "@" in a}
    if not domains:
        return None, "no author address in From"
    if len(domains) > 1:
        return None, f"From names authors in {len(domains)} domains"
    return domains.pop(), None


async def authentication_results(
    inp: AuthInput, authserv_id: str, timeout: float, resolver: Resolver
) -> str:
    """The complete header line; ``temperror`` for what missed the deadline.

    ``resolver`` should be fresh for each message: its cache then spans one evaluation (an SPF
    include chain is asked once) and never serves a stale record to the next message.
    """
    return (await assess(inp, timeout, resolver)).header(authserv_id, inp.client_ip)


async def assess(
    inp: AuthInput, timeout: float, resolver: Resolver, recent: RecentResults | None = None
) -> AuthVerdicts:
    """The verdicts behind the header (what the inbound policy decides on); ``temperror`` for
    what missed the deadline. ``recent``: see :func:`evaluate`."""
    dns = SyncDns(resolver, asyncio.get_running_loop())
    try:
        verdicts = await asyncio.wait_for(
            evaluate(inp, timeout, resolver, dns, recent), timeout * 2
        )
    except TimeoutError:
        author, author_problem = author_domain(inp.message)
        verdicts = AuthVerdicts(
            spf="temperror",
            spf_domain=(
                inp.mail_from.rpartition("@")[2].lower()
                if inp.mail_from
                else spf_sender("", inp.helo)
            ),
            dkim=[],
            dmarc="temperror",
            dmarc_policy=None,
            from_domain=author,
            spf_helo=None if inp.mail_from else inp.helo,
            author_problem=author_problem,
        )
    finally:
        dns.close()  # a thread still evaluating gets "could not tell" at once from now on
    return verdicts
