"""The lab zones mean what lab/zones.py says to real SPF and DKIM libraries (pyspf, dkimpy),
not just to our own reading of dig output."""

from __future__ import annotations

from collections.abc import Iterator

import dkim
import dns.resolver
import pytest
import spf

from lab.lab import Lab

# pyspf 2.0.14 still calls dns.resolver.query(); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:please use dns.resolver.resolve:DeprecationWarning")


@pytest.fixture
def lab_resolver(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[dns.resolver.Resolver]:
    assert lab.dns is not None
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [lab.dns.host]
    r.port = lab.dns.port
    r.lifetime = 5
    # pyspf resolves through dnspython's default resolver.
    monkeypatch.setattr(dns.resolver, "default_resolver", r)
    yield r


@pytest.mark.parametrize(
    ("domain", "result", "why"),
    [
        ("good.test", "pass", ""),
        ("splittxt.test", "pass", ""),
        ("dkim1024.test", "pass", ""),
        ("nospf.test", "none", ""),
        ("twospf.test", "permerror", "Two or more"),
        ("spfsyntax.test", "permerror", "Unknown mechanism"),
        ("spflookups.test", "permerror", "Too many DNS lookups"),
        ("spfvoid.test", "permerror", "Void lookup limit"),
        ("softfail.test", "softfail", ""),
    ],
)
def test_spf_results(
    lab_resolver: dns.resolver.Resolver, domain: str, result: str, why: str
) -> None:
    res, explanation = spf.check2(i="127.0.0.1", s=f"support@{domain}", h="mail.good.test")
    assert res == result, explanation
    assert why in explanation


@pytest.mark.parametrize(
    ("domain", "verifies"),
    [
        ("good.test", True),
        ("splittxt.test", True),
        ("dkim1024.test", True),
        ("dkim512.test", False),  # dkimpy refuses keys under 1024 bits
        ("dkimmismatch.test", False),  # signature made with a key DNS does not publish
    ],
)
def test_dkim_signatures(
    lab: Lab, lab_resolver: dns.resolver.Resolver, domain: str, verifies: bool
) -> None:
    selector, key = lab.dkim_key_for(domain)
    msg = (
        f"From: support@{domain}\r\nTo: someone@example.org\r\nSubject: dkim\r\n\r\nbody\r\n"
    ).encode()
    sig = dkim.sign(
        msg,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=[b"from", b"to", b"subject"],
    )

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = lab_resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(rr.strings) for rr in answer)

    assert dkim.verify(sig + msg, dnsfunc=lookup) is verifies
