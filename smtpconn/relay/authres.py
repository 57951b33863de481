"""``Authentication-Results`` (RFC 8601) for an inbound message: SPF of the connecting client for
the MAIL FROM domain (pyspf), DKIM signatures (dkimpy), DMARC of the From domain.

Both libraries are synchronous, so the whole evaluation runs in a worker thread and is bounded by
a deadline; what does not finish in time is reported as ``temperror`` rather than holding mail.
Their lookups go through the same bridge verify uses (:mod:`smtpconn.dns.sync`): handed
back to the event loop and answered by a CachingResolver over ``dns.resolvers.make_resolver``, so
``--resolver`` means the same here as everywhere, and pyspf is redirected only in the worker
thread that evaluates (no process-wide DNS switch).

It is evaluated when the message is handed to the sink, not before the ``250``: acknowledging a
message never waits for DNS.

DMARC's organisational domain is approximated as the last two labels (no Public Suffix List is
shipped); that is exact for the usual ``example.com`` and errs towards "not aligned" under
suffixes such as ``co.uk``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email.utils import getaddresses

from smtpconn.dns import DnsOutcome, Resolver
from smtpconn.dns.sync import DnsUnavailable, SyncDns, bound
from smtpconn.dns.tags import parse_tags
from smtpconn.relay.escaping import escape_controls
from smtpconn.relay.tagging import header_value


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
        return "Authentication-Results: " + ";\r\n\t".join(parts)


def _txt(dns: SyncDns, name: str) -> list[str]:
    answer = dns.query(name, "TXT")
    if answer.outcome is DnsOutcome.ERROR:
        raise DnsUnavailable(answer.error)
    return list(answer.records)


def _org_domain(domain: str) -> str:
    labels = domain.lower().rstrip(".").split(".")
    return ".".join(labels[-2:])


def _aligned(a: str, b: str, strict: bool) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else _org_domain(a) == _org_domain(b)


def _dmarc_record(dns: SyncDns, domain: str) -> dict[str, str] | None:
    for name in dict.fromkeys([domain, _org_domain(domain)]):
        for text in _txt(dns, f"_dmarc.{name}"):
            if text.lower().startswith("v=dmarc1"):
                tags = parse_tags(text)
                if name != domain and "sp" in tags:
                    tags["p"] = tags["sp"]
                return tags
    return None


def evaluate(inp: AuthInput, timeout: float, dns: SyncDns) -> AuthVerdicts:
    """SPF, DKIM and DMARC, synchronously, in a worker thread (never on the loop's thread: every
    lookup is answered there); call it through :func:`authentication_results`."""
    import dkim
    import spf

    sender = spf_sender(inp.mail_from, inp.helo)
    # RFC 8601 §2.7.2: smtp.mailfrom is the domain (or address) SPF evaluated; for the null
    # sender that is postmaster@<HELO>, reported in full beside smtp.helo.
    sender_domain = sender.rpartition("@")[2].lower()
    spf_domain = sender_domain if inp.mail_from else sender
    try:
        with bound(dns):
            spf_result, _explanation = spf.check2(
                i=inp.client_ip, s=sender, h=inp.helo or "unknown", querytime=timeout
            )
    except Exception:  # pyspf raises on malformed input; that is a policy error, not ours
        spf_result = "permerror"

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

    from_domain = _from_domain(inp.message)
    dmarc, policy = "none", None
    if from_domain:
        try:
            record = _dmarc_record(dns, from_domain)
        except Exception:
            record, dmarc = None, "temperror"
        if record is not None:
            policy = record.get("p")
            spf_ok = spf_result == "pass" and _aligned(
                sender_domain, from_domain, record.get("aspf", "r") == "s"
            )
            dkim_ok = any(
                r == "pass" and _aligned(d, from_domain, record.get("adkim", "r") == "s")
                for r, d in dkim_results
            )
            dmarc = "pass" if spf_ok or dkim_ok else "fail"
    return AuthVerdicts(
        spf=spf_result,
        spf_domain=spf_domain,
        dkim=dkim_results,
        dmarc=dmarc,
        dmarc_policy=policy,
        from_domain=from_domain,
        spf_helo=None if inp.mail_from else inp.helo,
    )


def _from_domain(message: bytes) -> str | None:
    value = header_value(message, "From")
    if not value:
        return None
    addresses = [a for _, a in getaddresses([value]) if "@" in a]
    if len(addresses) != 1:
        return None  # DMARC (RFC 7489 §6.6.1) is undefined for zero or several authors
    return addresses[0].rpartition("@")[2].lower()


async def authentication_results(
    inp: AuthInput, authserv_id: str, timeout: float, resolver: Resolver
) -> str:
    """The complete header line; ``temperror`` for what missed the deadline.

    ``resolver`` should be fresh for each message: its cache then spans one evaluation (an SPF
    include chain is asked once) and never serves a stale record to the next message.
    """
    dns = SyncDns(resolver, asyncio.get_running_loop())
    try:
        verdicts = await asyncio.wait_for(
            asyncio.to_thread(evaluate, inp, timeout, dns), timeout * 2
        )
    except TimeoutError:
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
            from_domain=_from_domain(inp.message),
            spf_helo=None if inp.mail_from else inp.helo,
        )
    finally:
        dns.close()  # a thread still evaluating gets "could not tell" at once from now on
    return verdicts.header(authserv_id, inp.client_ip)
