"""The lab's DNS zones: the ONE place where the test DNS data is declared.

Everything lives under the reserved ``.test`` TLD (RFC 2606), so nothing here can ever leak to or
collide with real DNS. The lab's authoritative server (``lab/dns.py``, NSD) serves exactly these
zones on 127.0.0.1; point a resolver at ``Lab.dns.host:Lab.dns.port`` to see them.

The customer's mail server in the lab is ``mail.good.test`` = 127.0.0.1 (Postfix,
``lab/postfix.py``), and 127.0.0.1 has the PTR ``mail.good.test`` (zone ``0.0.127.in-addr.arpa``),
which forward-confirms.
Every mail domain below uses that server as its MX (hosted-mail style) unless its defect says
otherwise, and authorises 127.0.0.1 in SPF, so the lab's Postfix is a legitimate sender for all of
them.

Each *broken* domain is a complete good setup (MX, server, SPF, DKIM, DMARC, MTA-STS, TLS-RPT)
except for exactly ONE defect, so a check that is meant to find that defect finds it in isolation
and every other check on that domain passes.

==================  =====================================================================
domain              what it is for (its one defect)
==================  =====================================================================
good.test           everything right: MX -> mail.good.test (A 127.0.0.1, PTR confirms),
                    SPF ``v=spf1 mx -all`` (authorises 127.0.0.1 via MX), 2048-bit DKIM
                    (selector ``sel2048``, private key ``main``), DMARC ``p=reject``
                    with strict alignment, MTA-STS TXT, TLS-RPT TXT
helpdesk.test       the help desk side: ``relay.helpdesk.test`` A 127.0.0.1 (the relay's
                    host name, its TLS cert is from ``lab/ca.py``); also the default
                    domain Postfix relays to a test-chosen host:port (``RELAY_DOMAIN``)
nospf.test          no SPF record at all
twospf.test         two ``v=spf1`` records (RFC 7208 4.5: permerror)
spfsyntax.test      SPF syntax error: misspelt mechanism ``inlcude:`` (permerror)
spflookups.test     SPF needs 16 DNS-mechanism lookups through nested includes (> 10)
spfvoid.test        SPF does 3 void lookups (names that do not exist) (> 2)
softfail.test       ``v=spf1 ip4:192.0.2.1 ~all``: 127.0.0.1 is NOT covered (softfail)
dkim1024.test       DKIM key is 1024 bits (selector ``sel1024``, private key ``weak1024``)
dkim512.test        DKIM key is 512 bits (selector ``sel512``, private key ``weak512``)
dkimmismatch.test   ``sel2048`` publishes the public half of key ``other``; the tests hold
                    (and sign with) key ``main``, so the published key does not match
nodmarc.test        no ``_dmarc`` record
dmarcnone.test      DMARC ``p=none`` (monitoring only)
nomx.test           no MX record (and no address at the apex, so no implicit MX either)
nomtasts.test       no ``_mta-sts`` and no ``_smtp._tls`` records
splittxt.test       NOT broken: SPF, DKIM and DMARC TXT records are each split over several
                    character-strings at awkward places. Concatenated WITHOUT separator
                    (RFC 7208 3.3, RFC 6376 3.6.2.2) they are valid; read only the first
                    string or join with spaces and they are not.
blocklist.test      not a mail domain: the DNS blocklist ``bl.blocklist.test`` (127.0.0.2
                    listed, 127.0.0.3 answered with a refusal code, 127.0.0.4 outside 127/8)
==================  =====================================================================

Two more zones stand for customers whose mail is hosted by a provider (``PROVIDER_DOMAINS``: not
mail domains of the lab's Postfix, no SPF/DKIM/DMARC to judge). Their MX records name the
provider's real inbound hosts, which are only names here: nothing resolves or connects to them.

==================  =====================================================================
m365.test           Microsoft 365: MX -> m365-test.mail.protection.outlook.com
gworkspace.test     Google Workspace: MX -> aspmx.l.google.com (10),
                    alt1.aspmx.l.google.com (20)
==================  =====================================================================

Two more zones are not mail domains of the table (no MX, no verify expectations); they serve the
relay's inbound policy tests:

==================  =====================================================================
co.uk.test          a public suffix in the style of ``co.uk``: ``_dmarc.co.uk.test`` is a
                    PSD record (``psd=y``); below it ``example.co.uk.test`` (the
                    organisational domain, DMARC ``p=reject; sp=reject``, relaxed
                    alignment), ``help.example.co.uk.test`` (no record of its own) and
                    ``attacker.co.uk.test`` (another registrant). Each authorises
                    127.0.0.1 in SPF. The last-two-labels guess calls all of them
                    ``uk.test``.
forwarder.test      ARC sealers: ``d=forwarder.test`` and ``d=other.forwarder.test``,
                    selector ``arc``, both with key ``main``; SPF authorises 127.0.0.1
==================  =====================================================================

DKIM keys are generated at lab start (``lab/keys.py``) into the lab's temp dir; their sizes are
declared here in ``DKIM_KEY_BITS``. ``Lab.dkim_keys[name]`` gives the PEM path of each private key.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Names shared by the whole lab
# --------------------------------------------------------------------------------------------

#: Host name of the customer's mail server (Postfix) in the lab. A 127.0.0.1, PTR confirms.
MAIL_HOST = "mail.good.test"
#: Its address. The lab only ever listens on loopback.
MAIL_ADDR = "127.0.0.1"
#: A pool of two nodes behind one name (A 127.0.0.1 and A 127.0.0.2): Postfix's ``pool`` port
#: serves a good certificate on the first and an expired one on the second (lab/postfix.py).
POOL_HOST = "pool.good.test"
POOL_ADDRS = (MAIL_ADDR, "127.0.0.2")
#: Host name of the help desk's relay (smtpconn relay); lab/ca.py issues a cert for it.
RELAY_HOST = "relay.helpdesk.test"
#: Domain that Postfix relays (with TLS + AUTH) to a host:port chosen at run time.
RELAY_DOMAIN = "helpdesk.test"
#: Name server host used in NS/SOA records (only cosmetic: the lab's NSD answers for all zones).
NS_HOST = "ns.good.test"
#: The reverse zone that holds the PTR for 127.0.0.1.
REVERSE_ZONE = "0.0.127.in-addr.arpa"

#: DKIM key names -> size in bits. Generated at lab start; "other" exists only to be published
#: where the tests sign with "main" (dkimmismatch.test).
DKIM_KEY_BITS: dict[str, int] = {
    "main": 2048,
    "other": 2048,
    "weak1024": 1024,
    "weak512": 512,
}

#: An SPF record that authorises the lab's mail server by address.
SPF_GOOD = "v=spf1 ip4:127.0.0.1 -all"


def dmarc_reject(domain: str) -> str:
    """A DMARC record with p=reject, strict alignment and aggregate reports to the domain."""
    return f"v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s; pct=100; rua=mailto:dmarc@{domain}"


MTA_STS = "v=STSv1; id=20240101T000000Z"


def tls_rpt(domain: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One resource record. ``name`` is relative to the zone ("@" for the apex).

    For TXT, ``data`` holds the character-strings exactly as published (several strings = one
    record split over several strings). For other types ``data`` has one element: the rdata.
    """

    name: str
    rtype: str
    data: tuple[str, ...]


@dataclass(frozen=True)
class Dkim:
    """A DKIM selector. ``key`` is the private key the tests hold and sign with; ``published`` is
    the key whose public half is in DNS (differs only for the mismatch case). ``chunk`` is the
    character-string size used to split the TXT record (255 is the usual maximum)."""

    selector: str
    key: str
    published: str | None = None
    chunk: int = 255

    @property
    def published_key(self) -> str:
        return self.published or self.key


@dataclass(frozen=True)
class Domain:
    name: str
    purpose: str
    #: MX host (``None`` = no MX record).
    mx: str | None = MAIL_HOST
    #: SPF records, each a tuple of character-strings (empty tuple = no SPF).
    spf: tuple[tuple[str, ...], ...] = ((SPF_GOOD,),)
    dkim: Dkim | None = Dkim("sel2048", "main")
    #: DMARC record as character-strings (``None`` = no DMARC). Default: dmarc_reject(name).
    dmarc: tuple[str, ...] | None = ()
    mta_sts: bool = True
    tls_rpt: bool = True
    #: Apex A record (``None`` = none). Without MX, an apex A would be an implicit MX.
    apex_a: str | None = MAIL_ADDR
    extra: tuple[Record, ...] = field(default_factory=tuple)
    #: True for the domains whose setup has a defect.
    broken: bool = True

    @property
    def dkim_selector(self) -> str | None:
        return self.dkim.selector if self.dkim else None

    @property
    def dkim_key(self) -> str | None:
        """Name of the private key (in ``DKIM_KEY_BITS``) the tests sign with for this domain."""
        return self.dkim.key if self.dkim else None

    @property
    def support_address(self) -> str:
        """The support address on this domain; Postfix accepts mail for it."""
        return f"support@{self.name}"

    def dmarc_strings(self) -> tuple[str, ...] | None:
        if self.dmarc is None:
            return None
        return self.dmarc or (dmarc_reject(self.name),)


def _split(text: str, *cuts: int) -> tuple[str, ...]:
    """Split ``text`` at the given offsets into character-strings (for the split-TXT domain)."""
    bounds = [0, *cuts, len(text)]
    return tuple(text[a:b] for a, b in itertools.pairwise(bounds))


_SPF_NESTED = tuple(
    Record(
        f"_spf{i}",
        "TXT",
        (f"v=spf1 a:h{i}a.spflookups.test a:h{i}b.spflookups.test a:h{i}c.spflookups.test -all",),
    )
    for i in range(1, 5)
) + tuple(
    Record(f"h{i}{s}", "A", (f"192.0.2.{i * 10 + n}",))
    for i in range(1, 5)
    for n, s in enumerate("abc")
)

# --------------------------------------------------------------------------------------------
# The zones
# --------------------------------------------------------------------------------------------

GOOD = Domain(
    "good.test",
    "everything right (MX, A, PTR, SPF via mx, DKIM 2048, DMARC reject, MTA-STS, TLS-RPT)",
    spf=(("v=spf1 mx -all",),),
    broken=False,
    extra=(
        Record("mail", "A", (MAIL_ADDR,)),
        Record("ns", "A", (MAIL_ADDR,)),
        *(Record("pool", "A", (a,)) for a in POOL_ADDRS),
    ),
)

HELPDESK = Domain(
    RELAY_DOMAIN,
    "the help desk: relay.helpdesk.test A 127.0.0.1; default relay-transport domain",
    broken=False,
    extra=(Record("relay", "A", (MAIL_ADDR,)),),
)

NOSPF = Domain("nospf.test", "no SPF record", spf=())
TWOSPF = Domain(
    "twospf.test",
    "two SPF records (permerror)",
    spf=((SPF_GOOD,), ("v=spf1 mx -all",)),
)
SPFSYNTAX = Domain(
    "spfsyntax.test",
    "SPF syntax error: misspelt mechanism 'inlcude:' (permerror)",
    spf=(("v=spf1 ip4:127.0.0.1 inlcude:_spf.good.test -all",),),
)
SPFLOOKUPS = Domain(
    "spflookups.test",
    "SPF needs 16 DNS-mechanism lookups (4 includes x 3 'a:' each + 4) > 10 (permerror)",
    spf=(
        (
            "v=spf1 include:_spf1.spflookups.test include:_spf2.spflookups.test "
            "include:_spf3.spflookups.test include:_spf4.spflookups.test ip4:127.0.0.1 -all",
        ),
    ),
    extra=_SPF_NESTED,
)
SPFVOID = Domain(
    "spfvoid.test",
    "SPF does 3 void lookups (non-existent names) > 2 (permerror)",
    spf=(
        (
            "v=spf1 a:void1.spfvoid.test a:void2.spfvoid.test a:void3.spfvoid.test "
            "ip4:127.0.0.1 -all",
        ),
    ),
)
SOFTFAIL = Domain(
    "softfail.test",
    "SPF '~all' and 127.0.0.1 not covered (softfail)",
    spf=(("v=spf1 ip4:192.0.2.1 ~all",),),
)
DKIM1024 = Domain("dkim1024.test", "DKIM key 1024 bits", dkim=Dkim("sel1024", "weak1024"))
DKIM512 = Domain("dkim512.test", "DKIM key 512 bits", dkim=Dkim("sel512", "weak512"))
DKIMMISMATCH = Domain(
    "dkimmismatch.test",
    "published DKIM key (key 'other') does not match the private key held (key 'main')",
    dkim=Dkim("sel2048", "main", published="other"),
)
NODMARC = Domain("nodmarc.test", "no DMARC record", dmarc=None)
DMARCNONE = Domain(
    "dmarcnone.test",
    "DMARC p=none",
    dmarc=("v=DMARC1; p=none; adkim=s; aspf=s; rua=mailto:dmarc@dmarcnone.test",),
)
NOMX = Domain("nomx.test", "no MX record (and no apex A, so no implicit MX)", mx=None, apex_a=None)
NOMTASTS = Domain("nomtasts.test", "no MTA-STS and no TLS-RPT record", mta_sts=False, tls_rpt=False)
SPLITTXT = Domain(
    "splittxt.test",
    "SPF, DKIM and DMARC TXT records split over several strings (valid when concatenated)",
    # Joined with a space this would read "ip4:12 7.0.0.1": invalid. Joined properly: valid.
    spf=(_split(SPF_GOOD, 13, 18),),
    dkim=Dkim("sel2048", "main", chunk=40),
    dmarc=_split(dmarc_reject("splittxt.test"), 9, 25),
    broken=False,
)

#: All mail domains, in the order of the table above.
DOMAINS: tuple[Domain, ...] = (
    GOOD,
    HELPDESK,
    NOSPF,
    TWOSPF,
    SPFSYNTAX,
    SPFLOOKUPS,
    SPFVOID,
    SOFTFAIL,
    DKIM1024,
    DKIM512,
    DKIMMISMATCH,
    NODMARC,
    DMARCNONE,
    NOMX,
    NOMTASTS,
    SPLITTXT,
)
DOMAINS_BY_NAME: dict[str, Domain] = {d.name: d for d in DOMAINS}


def _hosted(name: str, purpose: str, mx: str, *more_mx: str) -> Domain:
    return Domain(
        name,
        purpose,
        mx=mx,
        spf=(),
        dkim=None,
        dmarc=None,
        mta_sts=False,
        tls_rpt=False,
        apex_a=None,
        extra=tuple(Record("@", "MX", (f"{10 * (n + 2)} {h}.",)) for n, h in enumerate(more_mx)),
        broken=False,
    )


#: Customers whose mail is hosted by a provider, for ``add-address --provider auto``.
M365 = _hosted("m365.test", "Microsoft 365 MX", "m365-test.mail.protection.outlook.com")
GWORKSPACE = _hosted(
    "gworkspace.test", "Google Workspace MX", "aspmx.l.google.com", "alt1.aspmx.l.google.com"
)
PROVIDER_DOMAINS: tuple[Domain, ...] = (M365, GWORKSPACE)

#: PTR records of the reverse zone (relative name -> target).
REVERSE_PTRS: dict[str, str] = {"1": MAIL_HOST}

#: A DNS blocklist (RFC 5782) for dns.blocklist: verify --blocklist BLOCKLIST. 127.0.0.1 (the
#: lab's mail server) is not listed; 127.0.0.2 is listed (every list's test entry); 127.0.0.3
#: gets Spamhaus's "public resolver refused" code; 127.0.0.4 an answer outside 127/8, as from a
#: resolver that rewrites NXDOMAIN.
BLOCKLIST_ZONE = "blocklist.test"
BLOCKLIST = f"bl.{BLOCKLIST_ZONE}"
BLOCKLIST_DELIST = "https://blocklist.test/remove"
BLOCKLIST_RECORDS = (
    Record("2.0.0.127.bl", "A", ("127.0.0.2",)),
    Record("2.0.0.127.bl", "TXT", (f"listed for the lab: {BLOCKLIST_DELIST}?ip=127.0.0.2",)),
    Record("3.0.0.127.bl", "A", ("127.255.255.254",)),
    Record("4.0.0.127.bl", "A", ("192.0.2.1",)),
)

# --------------------------------------------------------------------------------------------
# Rendering (used by lab/dns.py; pure functions so unit tests can look at the text too)
# --------------------------------------------------------------------------------------------


def dkim_txt(public_key_der: bytes) -> str:
    """The DKIM key record text for a DER SubjectPublicKeyInfo (RFC 6376 3.6.1)."""
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(public_key_der).decode("ascii")


def _chunks(text: str, size: int) -> tuple[str, ...]:
    return tuple(text[i : i + size] for i in range(0, len(text), size))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def domain_records(domain: Domain, public_keys: Mapping[str, bytes]) -> list[Record]:
    """All records of a mail domain's zone (without SOA/NS).

    ``public_keys`` maps DKIM key names to DER SubjectPublicKeyInfo bytes.
    """
    recs: list[Record] = []
    if domain.apex_a:
        recs.append(Record("@", "A", (domain.apex_a,)))
    if domain.mx:
        recs.append(Record("@", "MX", (f"10 {domain.mx}.",)))
    for spf in domain.spf:
        recs.append(Record("@", "TXT", spf))
    if domain.dkim:
        text = dkim_txt(public_keys[domain.dkim.published_key])
        recs.append(
            Record(f"{domain.dkim.selector}._domainkey", "TXT", _chunks(text, domain.dkim.chunk))
        )
    dmarc = domain.dmarc_strings()
    if dmarc is not None:
        recs.append(Record("_dmarc", "TXT", dmarc))
    if domain.mta_sts:
        # mta-sts.<domain> is the lab's HTTPS policy server (lab/mta_sts.py).
        recs.append(Record("_mta-sts", "TXT", (MTA_STS,)))
        recs.append(Record("mta-sts", "A", (MAIL_ADDR,)))
    if domain.tls_rpt:
        recs.append(Record("_smtp._tls", "TXT", (tls_rpt(domain.name),)))
    recs.extend(domain.extra)
    return recs


def _zone_text(origin: str, records: list[Record]) -> str:
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 60",
        f"@ IN SOA {NS_HOST}. hostmaster.good.test. 1 3600 600 86400 60",
        f"@ IN NS {NS_HOST}.",
    ]
    for r in records:
        rdata = " ".join(_quote(s) for s in r.data) if r.rtype == "TXT" else r.data[0]
        lines.append(f"{r.name} IN {r.rtype} {rdata}")
    return "\n".join(lines) + "\n"


#: The public-suffix-style zone and the names registered below it (see the table above).
PSD_ZONE = "co.uk.test"
PSD_ORG = f"example.{PSD_ZONE}"
PSD_SUBDOMAIN = f"help.{PSD_ORG}"
PSD_OTHER = f"attacker.{PSD_ZONE}"
#: The ARC sealers' zone, the two sealer domains and their selector.
ARC_ZONE = "forwarder.test"
ARC_SEALER = ARC_ZONE
ARC_OTHER_SEALER = f"other.{ARC_ZONE}"
ARC_SELECTOR = "arc"


def policy_zones(public_keys: Mapping[str, bytes]) -> dict[str, list[Record]]:
    """The zones of the inbound policy tests (not mail domains: no MX, no verify checks)."""
    psd = [
        Record("_dmarc", "TXT", ("v=DMARC1; p=none; psd=y",)),
        Record("_dmarc.example", "TXT", ("v=DMARC1; p=reject; sp=reject; adkim=r; aspf=r",)),
        *(Record(name, "TXT", (SPF_GOOD,)) for name in ("example", "help.example", "attacker")),
    ]
    key = dkim_txt(public_keys["main"])
    arc = [
        Record("@", "TXT", (SPF_GOOD,)),
        Record(f"{ARC_SELECTOR}._domainkey", "TXT", _chunks(key, 255)),
        Record(f"{ARC_SELECTOR}._domainkey.other", "TXT", _chunks(key, 255)),
    ]
    return {PSD_ZONE: psd, ARC_ZONE: arc}


def render_zones(public_keys: Mapping[str, bytes]) -> dict[str, str]:
    """Zone name -> zone file text, for every zone the lab serves (mail domains + reverse)."""
    zones = {
        d.name: _zone_text(d.name, domain_records(d, public_keys))
        for d in (*DOMAINS, *PROVIDER_DOMAINS)
    }
    zones[BLOCKLIST_ZONE] = _zone_text(BLOCKLIST_ZONE, list(BLOCKLIST_RECORDS))
    for name, records in policy_zones(public_keys).items():
        zones[name] = _zone_text(name, records)
    zones[REVERSE_ZONE] = _zone_text(
        REVERSE_ZONE, [Record(k, "PTR", (f"{v}.",)) for k, v in REVERSE_PTRS.items()]
    )
    return zones
