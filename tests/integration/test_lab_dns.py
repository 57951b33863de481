"""The lab's NSD answers, for every zone in lab/zones.py, exactly what that zone is for (dig)."""

from __future__ import annotations

import base64
import re
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lab import zones
from lab.dns import BlackHoleResolver, ServfailResolver, dig
from lab.lab import Lab


def q(lab: Lab, *args: str) -> str:
    assert lab.dns is not None
    return dig(lab.dns.host, lab.dns.port, *args)


def status(lab: Lab, *args: str) -> str:
    assert lab.dns is not None
    out = dig(lab.dns.host, lab.dns.port, *args, short=False)
    m = re.search(r"status: (\w+)", out)
    assert m, out
    return m.group(1)


def txt_records(lab: Lab, name: str) -> list[list[str]]:
    """TXT records of ``name``, each as its list of character-strings (as dig shows them)."""
    out = q(lab, "TXT", name)
    return [re.findall(r'"((?:[^"\\]|\\.)*)"', line) for line in out.splitlines() if line]


def joined(lab: Lab, name: str) -> list[str]:
    """TXT records as RFC 7208/6376 read them: strings concatenated WITHOUT a separator."""
    return ["".join(r) for r in txt_records(lab, name)]


def spf(lab: Lab, domain: str) -> list[str]:
    return [t for t in joined(lab, domain) if t.lower().startswith("v=spf1")]


def dkim_key(lab: Lab, selector: str, domain: str) -> rsa.RSAPublicKey:
    [rec] = joined(lab, f"{selector}._domainkey.{domain}")
    tags = dict(t.strip().split("=", 1) for t in rec.split(";") if t.strip())
    assert tags["v"] == "DKIM1" and tags["k"] == "rsa"
    key = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def der(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the good domain and the server's name -----------------------------------------------------


def test_good_domain_is_complete(lab: Lab) -> None:
    assert q(lab, "MX", "good.test").split() == ["10", "mail.good.test."]
    assert q(lab, "A", "mail.good.test").strip() == "127.0.0.1"
    assert spf(lab, "good.test") == ["v=spf1 mx -all"]
    selector, key = lab.dkim_key_for("good.test")
    assert selector == "sel2048" and key.bits == 2048
    published = dkim_key(lab, selector, "good.test")
    assert published.key_size == 2048
    assert der(published) == key.public_der  # the tests hold the matching private half
    [dmarc] = joined(lab, "_dmarc.good.test")
    assert "p=reject" in dmarc and "adkim=s" in dmarc and "aspf=s" in dmarc
    assert joined(lab, "_mta-sts.good.test") == [zones.MTA_STS]
    assert joined(lab, "_smtp._tls.good.test")[0].startswith("v=TLSRPTv1;")


def test_ptr_of_loopback_forward_confirms(lab: Lab) -> None:
    name = q(lab, "-x", "127.0.0.1").strip()
    assert name == "mail.good.test."
    assert q(lab, "A", name).strip() == "127.0.0.1"


def test_relay_host_resolves(lab: Lab) -> None:
    assert q(lab, "A", zones.RELAY_HOST).strip() == "127.0.0.1"


def test_tcp_works_too(lab: Lab) -> None:
    assert q(lab, "+tcp", "MX", "good.test").split() == ["10", "mail.good.test."]


# -- every broken domain is a full setup apart from its one defect ---------------------------


@pytest.mark.parametrize("domain", [*zones.DOMAINS, *zones.PROVIDER_DOMAINS], ids=lambda d: d.name)
def test_served_exactly_as_declared(lab: Lab, domain: zones.Domain) -> None:
    """What NSD serves is what lab/zones.py declares (so the table there can be trusted)."""
    mx = sorted(q(lab, "MX", domain.name).splitlines())
    declared = [r.data[0] for r in domain.extra if r.rtype == "MX"]
    assert mx == sorted([f"10 {domain.mx}.", *declared] if domain.mx else [])
    assert len(spf(lab, domain.name)) == len(domain.spf)
    if domain.dkim:
        published = dkim_key(lab, domain.dkim.selector, domain.name)
        assert der(published) == lab.dkim_keys[domain.dkim.published_key].public_der
    has_dmarc = bool(joined(lab, f"_dmarc.{domain.name}"))
    assert has_dmarc == (domain.dmarc is not None)
    assert bool(joined(lab, f"_mta-sts.{domain.name}")) == domain.mta_sts
    assert bool(joined(lab, f"_smtp._tls.{domain.name}")) == domain.tls_rpt


@pytest.mark.parametrize("domain", [d for d in zones.DOMAINS if d.broken], ids=lambda d: d.name)
def test_broken_domain_otherwise_complete(lab: Lab, domain: zones.Domain) -> None:
    """Only the named defect is missing: everything else a good setup has is there."""
    name = domain.name
    if name != "nomx.test":
        assert q(lab, "MX", name).split() == ["10", "mail.good.test."]
    if name != "nospf.test":
        assert spf(lab, name)
    if name != "nodmarc.test":
        assert any(t.startswith("v=DMARC1") for t in joined(lab, f"_dmarc.{name}"))
    assert domain.dkim is not None
    assert dkim_key(lab, domain.dkim.selector, name).key_size >= 512


def test_nospf(lab: Lab) -> None:
    assert spf(lab, "nospf.test") == []


def test_twospf(lab: Lab) -> None:
    assert len(spf(lab, "twospf.test")) == 2


def test_spfsyntax(lab: Lab) -> None:
    [record] = spf(lab, "spfsyntax.test")
    assert "inlcude:" in record  # a mechanism that does not exist: permerror


def _dns_mechanisms(lab: Lab, domain: str) -> int:
    """Count the DNS-querying terms RFC 7208 4.6.4 limits to 10, following include:s."""
    [record] = spf(lab, domain)
    count = 0
    for term in record.split()[1:]:
        mech = term.lstrip("+-~?").split(":", 1)[0].split("/", 1)[0].lower()
        if mech in ("a", "mx", "ptr", "exists", "include") or term.startswith("redirect="):
            count += 1
        if mech == "include":
            count += _dns_mechanisms(lab, term.split(":", 1)[1])
    return count


def test_spflookups_exceeds_ten(lab: Lab) -> None:
    assert _dns_mechanisms(lab, "spflookups.test") == 16
    assert _dns_mechanisms(lab, "good.test") == 1


def test_spfvoid_has_three_void_lookups(lab: Lab) -> None:
    [record] = spf(lab, "spfvoid.test")
    targets = [t.split(":", 1)[1] for t in record.split() if t.startswith("a:")]
    assert len(targets) == 3
    for t in targets:
        assert status(lab, "A", t) == "NXDOMAIN"


def test_softfail_does_not_cover_server(lab: Lab) -> None:
    [record] = spf(lab, "softfail.test")
    assert record.endswith("~all") and "127.0.0.1" not in record and " mx" not in record


@pytest.mark.parametrize(
    ("domain", "selector", "bits"),
    [("dkim1024.test", "sel1024", 1024), ("dkim512.test", "sel512", 512)],
)
def test_weak_dkim_keys(lab: Lab, domain: str, selector: str, bits: int) -> None:
    published = dkim_key(lab, selector, domain)
    assert published.key_size == bits
    sel, held = lab.dkim_key_for(domain)
    assert sel == selector and held.bits == bits and der(published) == held.public_der
    # The private half the tests hold loads (cryptography loads <1024-bit keys, only refuses
    # to generate them).
    priv = serialization.load_pem_private_key(held.private_pem, password=None)
    assert isinstance(priv, rsa.RSAPrivateKey) and priv.key_size == bits


def test_dkimmismatch(lab: Lab) -> None:
    selector, held = lab.dkim_key_for("dkimmismatch.test")
    published = der(dkim_key(lab, selector, "dkimmismatch.test"))
    assert published != held.public_der
    assert published == lab.dkim_keys["other"].public_der


def test_nodmarc(lab: Lab) -> None:
    assert joined(lab, "_dmarc.nodmarc.test") == []
    assert status(lab, "TXT", "_dmarc.nodmarc.test") == "NXDOMAIN"


def test_dmarcnone(lab: Lab) -> None:
    [dmarc] = joined(lab, "_dmarc.dmarcnone.test")
    assert re.search(r"\bp=none\b", dmarc)


def test_nomx(lab: Lab) -> None:
    assert q(lab, "MX", "nomx.test") == ""
    assert q(lab, "A", "nomx.test") == ""  # no implicit MX either
    assert status(lab, "MX", "nomx.test") == "NOERROR"  # the domain exists


def test_nomtasts(lab: Lab) -> None:
    assert joined(lab, "_mta-sts.nomtasts.test") == []
    assert joined(lab, "_smtp._tls.nomtasts.test") == []


def test_splittxt(lab: Lab) -> None:
    [spf_strings] = [r for r in txt_records(lab, "splittxt.test") if r[0].startswith("v=spf1")]
    assert len(spf_strings) > 1
    assert "".join(spf_strings) == zones.SPF_GOOD  # valid only when joined without separator
    assert " ".join(spf_strings) != zones.SPF_GOOD
    [dkim_strings] = txt_records(lab, "sel2048._domainkey.splittxt.test")
    assert len(dkim_strings) > 5
    selector, held = lab.dkim_key_for("splittxt.test")
    assert der(dkim_key(lab, selector, "splittxt.test")) == held.public_der
    [dmarc_strings] = txt_records(lab, "_dmarc.splittxt.test")
    assert len(dmarc_strings) > 1 and "p=reject" in "".join(dmarc_strings)


# -- resolvers that misbehave, for timeout/error tests -----------------------------------------


def test_black_hole_resolver_never_answers() -> None:
    with BlackHoleResolver() as bh:
        # dig exits 9 when no server replied (so not through lab.dns.dig, which raises on it).
        res = subprocess.run(
            ["dig", f"@{bh.host}", "-p", str(bh.port), "+tries=1", "+time=1", "MX", "good.test"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 9, res.stdout
        assert "timed out" in res.stdout


def test_servfail_resolver(lab: Lab) -> None:
    with ServfailResolver() as sf:
        out = dig(sf.host, sf.port, "MX", "good.test", short=False)
        assert "status: SERVFAIL" in out
