"""A generated corpus of DNS misconfigurations: defects combined, not hand-picked.

Each defect is one value of one dimension (the SPF record, the DMARC record, the DKIM key record,
the MX, where the support address sits). A case is one zone ``u-gen-NNN.test`` that combines one
value of every dimension: every SPF defect meets every DMARC defect at the apex and on a
subdomain (the product), and the DKIM and MX defects are laid over that product so that every
pair of values of any two dimensions occurs (for fixed SPF and DMARC values, ``i + j`` and
``i - j`` run through every DKIM and MX value). Helper records a defect needs (include targets,
redirect chains, void names) live in the case's own zone, so that no lookup leaves what the
server is authoritative for.

``fix_records`` and ``apply_fix`` read a ``fix`` text the way an administrator would: the records
of its first alternative that names any, published as written, each replacing the records of its
owner and type (and a CNAME there, which no other data may sit beside).
"""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lab.zones import MAIL_ADDR, MAIL_HOST, Record, dkim_txt

#: The outbound server every generated address sends through (the lab's Postfix, 127.0.0.1).
SERVER = MAIL_HOST
GOOD_SPF = f"v=spf1 ip4:{MAIL_ADDR} -all"

#: A builder gets the address's owner prefix ("" at the apex, "help." on the subdomain) and the
#: zone name, and returns records with names relative to the zone.
Builder = Callable[[str, str], list[Record]]


def _owner(prefix: str, name: str = "") -> str:
    """``name`` under the address's domain, relative to the zone (``@`` for the apex itself)."""
    full = f"{name}.{prefix}".strip(".") if name else prefix.rstrip(".")
    return full or "@"


def _txt(owner: str, *strings: str) -> Record:
    return Record(owner, "TXT", strings)


def _split255(text: str) -> tuple[str, ...]:
    return tuple(text[i : i + 255] for i in range(0, len(text), 255))


def _spf(text: str, *extra: tuple[str, str]) -> Builder:
    """An apex SPF record ``text`` ({d} = the address's domain, {z} = the zone) plus helper TXT
    records (name relative to the address's domain, text)."""

    def build(prefix: str, zone: str) -> list[Record]:
        domain = f"{prefix}{zone}"
        records = [_txt(_owner(prefix), *_split255(text.format(d=domain, z=zone)))]
        records += [
            _txt(_owner(prefix, n), *_split255(t.format(d=domain, z=zone))) for n, t in extra
        ]
        return records

    return build


def _many(text: str, *extra: tuple[str, str]) -> Builder:
    """Several SPF records at the apex (``|`` separates them)."""

    def build(prefix: str, zone: str) -> list[Record]:
        domain = f"{prefix}{zone}"
        records = [_txt(_owner(prefix), t.format(d=domain)) for t in text.split("|")]
        return records + [_txt(_owner(prefix, n), t.format(d=domain)) for n, t in extra]

    return build


_BIG = " ".join(f"ip4:198.51.100.{n}" for n in range(1, 40))  # > 512 bytes with the rest

SPF: dict[str, Builder] = {
    "good": _spf(GOOD_SPF),
    "missing": lambda prefix, zone: [],
    "redirect-missing": _spf("v=spf1 redirect=_spf.{d}"),
    "redirect-chain": _spf(
        "v=spf1 redirect=_r1.{d}", ("_r1", "v=spf1 redirect=_r2.{d}"), ("_r2", "v=spf1 ~all")
    ),
    "redirect-loop": _spf("v=spf1 redirect=_r1.{d}", ("_r1", "v=spf1 redirect={d}")),
    "include-missing": _spf(f"v=spf1 include:_none.{{d}} ip4:{MAIL_ADDR} -all"),
    "include-broken": _spf(
        f"v=spf1 include:_spf.{{d}} ip4:{MAIL_ADDR} -all", ("_spf", "v=spf1 inlcude:x.{d} -all")
    ),
    "include-loop": _spf("v=spf1 include:_spf.{d} -all", ("_spf", "v=spf1 include:{d} -all")),
    "include-plusall": _spf(
        f"v=spf1 include:_spf.{{d}} ip4:{MAIL_ADDR} -all", ("_spf", "v=spf1 +all")
    ),
    "void": _spf(f"v=spf1 a:v1.{{d}} a:v2.{{d}} a:v3.{{d}} ip4:{MAIL_ADDR} -all"),
    "plusall": _spf("v=spf1 +all"),
    "neutral": _spf("v=spf1 ?all"),
    "softfail-other": _spf("v=spf1 ip4:192.0.2.1 ~all"),
    "ptr": _spf("v=spf1 ptr -all"),
    "macro": _spf("v=spf1 exists:%{{i}}._ip.{d} -all"),
    "duplicate": _many(f"{GOOD_SPF}|v=spf1 ip4:192.0.2.1 -all"),
    "split": lambda prefix, zone: [
        _txt(_owner(prefix), "v=spf1 ip4:192.0.2.1 ", "ip4:192.0.2.2 ~all")
    ],
    "over-512": _spf(f"v=spf1 {_BIG} ip4:192.0.2.0/24 -all"),
    "too-many-lookups": _spf("v=spf1 " + " ".join(f"a:h{n}.{{d}}" for n in range(1, 12)) + " -all"),
}

_DMARC_GOOD = "v=DMARC1; p=reject; rua=mailto:dmarc@{z}"

#: DMARC: (records at _dmarc.<address's domain>, records at _dmarc.<zone> when they differ).
DMARC: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "good": ((_DMARC_GOOD,), ()),
    "missing": ((), ()),
    "p-none": (("v=DMARC1; p=none; rua=mailto:dmarc@{z}",), ()),
    "bad-policy": (("v=DMARC1; p=rejet",), ()),
    "no-semicolon": (("v=DMARC1 p=reject; rua=mailto:dmarc@{z}",), ()),
    "v-not-first": (("p=reject; v=DMARC1",), ()),
    "duplicate": ((_DMARC_GOOD, "v=DMARC1; p=none"), ()),
    "pct": (("v=DMARC1; p=reject; pct=50",), ()),
    "testing": (("v=DMARC1; p=quarantine; t=y",), ()),
    "org-only": ((), (_DMARC_GOOD,)),
    "org-sp-none": ((), ("v=DMARC1; p=reject; sp=none; rua=mailto:dmarc@{z}",)),
}


def _dkim(kind: str) -> Callable[[Mapping[str, bytes]], tuple[str, ...] | None]:
    def record(public: Mapping[str, bytes]) -> tuple[str, ...] | None:
        main = base64.b64encode(public["main"]).decode()
        texts = {
            "good": dkim_txt(public["main"]),
            "testing": f"v=DKIM1; k=rsa; t=y; p={main}",
            "revoked": "v=DKIM1; k=rsa; p=",
            "bad-base64": f"v=DKIM1; k=rsa; p={main[:60]}*not-base64*",
            "wrong-k": f"v=DKIM1; k=ed25519; p={main}",
            "other-key": dkim_txt(public["other"]),
        }
        text = texts.get(kind)
        return None if text is None else _split255(text)

    return record


DKIM = {kind: _dkim(kind) for kind in ("good", "testing", "revoked", "bad-base64", "wrong-k")}
DKIM["other-key"] = _dkim("other-key")
DKIM["missing"] = _dkim("missing")

#: MX of the address's domain: (MX rdata, extra records relative to the address's domain).
MX: dict[str, tuple[str | None, tuple[Record, ...]]] = {
    "good": (f"10 {SERVER}.", ()),
    "null": ("0 .", ()),
    "cname": ("10 mx.{d}.", (Record("mx", "CNAME", (f"{SERVER}.",)),)),
    "dangling": ("10 gone.{d}.", ()),
    "ip-literal": (f"10 {MAIL_ADDR}.", ()),
    "implicit": (None, ()),
}


@dataclass(frozen=True)
class Case:
    zone: str
    address: str
    defects: Mapping[str, str]  # dimension -> value

    @property
    def domain(self) -> str:
        return self.address.split("@", 1)[1]


def _case_records(case: Case, public: Mapping[str, bytes]) -> list[Record]:
    prefix = "help." if case.domain != case.zone else ""
    d = case.defects
    records = list(SPF[d["spf"]](prefix, case.zone))
    here, org = DMARC[d["dmarc"]]
    fill = {"z": case.zone}
    records += [_txt(_owner(prefix, "_dmarc"), t.format(**fill)) for t in here]
    records += [_txt("_dmarc", t.format(**fill)) for t in org]
    dkim = DKIM[d["dkim"]](public)
    if dkim is not None:
        records.append(Record(_owner(prefix, "sel2048._domainkey"), "TXT", dkim))
    mx, extra = MX[d["mx"]]
    if mx is not None:
        records.append(Record(_owner(prefix), "MX", (mx.format(d=case.domain),)))
    records += [Record(_owner(prefix, r.name), r.rtype, r.data) for r in extra]
    # An address at the apex of every domain: the implicit-MX case relies on it, and an
    # "a" term has something to find.
    records.append(Record(_owner(prefix), "A", (MAIL_ADDR,)))
    # Names the too-many-lookups record asks for exist (each an address lookup, none void).
    records += [Record(_owner(prefix, f"h{n}"), "A", ("192.0.2.9",)) for n in range(1, 12)]
    return records


def generate_cases() -> list[Case]:
    """Every SPF value x every DMARC value x (apex, subdomain), DKIM and MX laid over them."""
    dkim, mx = list(DKIM), list(MX)
    cases = []
    product = itertools.product(enumerate(SPF), enumerate(DMARC), (False, True))
    for n, ((i, spf), (j, dmarc), sub) in enumerate(product, start=1):
        zone = f"u-gen-{n:03d}.test"
        # DMARC found only at the organisational domain needs the address on a subdomain.
        on_sub = sub or dmarc.startswith("org-")
        domain = f"help.{zone}" if on_sub else zone
        defects = {
            "spf": spf,
            "dmarc": dmarc,
            "dkim": dkim[(i + j + sub) % len(dkim)],
            "mx": mx[(i - j + 2 * sub) % len(mx)],
            "where": "subdomain" if on_sub else "apex",
        }
        cases.append(Case(zone, f"support@{domain}", defects))
    return cases


def corpus_zones(cases: list[Case], public: Mapping[str, bytes]) -> dict[str, list[Record]]:
    return {case.zone: _case_records(case, public) for case in cases}


# ------------------------------------------------------------------------------------------
# Reading a fix


_TXT = re.compile(r'(\S+)\. TXT ((?:"(?:[^"\\]|\\.)*" ?)+)')
_MX = re.compile(r"(\S+)\. MX (\d+) (\S+\.)")
_ADDR = re.compile(r"(\S+)\. (A|AAAA) ([0-9a-fA-F.:]+\b)")
_ALTERNATIVE = re.compile(r"\(or\b|,? or\b|; or\b")

Published = tuple[str, str, tuple[str, ...]]  # owner, type, data


def records_in(text: str) -> list[Published]:
    """The records ``text`` prints in zone-file syntax, in the order printed."""
    found: list[tuple[int, Published]] = []
    for m in _TXT.finditer(text):
        strings = tuple(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2)))
        found.append((m.start(), (m.group(1), "TXT", strings)))
    found += [
        (m.start(), (m.group(1), "MX", (f"{m.group(2)} {m.group(3)}",))) for m in _MX.finditer(text)
    ]
    found += [(m.start(), (m.group(1), m.group(2), (m.group(3),))) for m in _ADDR.finditer(text)]
    return [r for _, r in sorted(found)]


def fix_records(fix: str) -> list[Published]:
    """The records of the fix's first alternative that names any ("publish A, or B")."""
    for part in _ALTERNATIVE.split(fix):
        records = records_in(part)
        if records:
            return records
    return []


def apply_fix(zone: str, records: list[Record], published: list[Published]) -> list[Record]:
    """``records`` of ``zone`` with ``published`` put in: each replaces the records of its owner
    and type (several published for one owner and type make one set)."""
    out = list(records)
    replaced: set[tuple[str, str]] = set()
    for owner, rtype, data in published:
        name = relative(zone, owner)
        if (name, rtype) not in replaced:
            replaced.add((name, rtype))
            out = [r for r in out if r.name != name or r.rtype not in (rtype, "CNAME")]
        out.append(Record(name, rtype, data))
    return out


def relative(zone: str, owner: str) -> str:
    owner = owner.rstrip(".").lower()
    if owner == zone:
        return "@"
    assert owner.endswith("." + zone), f"{owner} is outside {zone}"
    return owner[: -len(zone) - 1]
