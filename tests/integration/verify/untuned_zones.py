"""Misconfigurations the lab's zones do not have, served by a second NSD of our own.

The lab (lab/zones.py) has one zone per defect it was built for; ``verify`` was developed against
those. These zones are the "new user" test (a setup verify was not written against): the same kind of complete setup (MX, SPF,
DKIM, DMARC, MTA-STS, TLS-RPT, built with ``lab.zones.Domain``) with one defect each, which no
check was tuned to. Every zone is its own second-level ``.test`` zone (``u-*.test``) so that a
DMARC tree walk or an SPF lookup never leaves what this server is authoritative for.

``ScenarioNsd`` serves the lab's zones (its readiness probe asks for good.test) plus these, and
can republish one zone while running (``publish``: rewrite the file, SIGHUP, wait until the new
data is served), which is how the tests check that a ``fix`` really makes its check pass.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import zones
from lab.dns import NsdServer
from lab.zones import MAIL_ADDR, MAIL_HOST, Dkim, Domain, Record

#: Addresses of the scenario servers (loopback: nothing here ever leaves the machine).
PTR_ADDR = "127.0.0.2"  # its PTR names a host that does not resolve back to it
PTR_ZONE = "2.0.0.127.in-addr.arpa"  # more specific than the lab's 0.0.127.in-addr.arpa
V6_ADDR = "2001:db8::25"  # documentation prefix: unroutable, has no PTR
V6_ZONE = "8.b.d.0.1.0.0.2.ip6.arpa"


@dataclass(frozen=True)
class Scenario:
    """One support address on a broken zone, and what a mail administrator expects verify to
    say about it (every check not named here must pass)."""

    address: str
    expected: Mapping[str, str]  # check id -> status
    host: str = MAIL_HOST  # the outbound server
    selector: str | None = "sel2048"
    key: str = "main"  # lab key name, or "ed25519" for the key generated here


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(origin: str, records: list[Record]) -> str:
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 60",
        f"@ IN SOA {zones.NS_HOST}. hostmaster.good.test. 1 3600 600 86400 60",
        f"@ IN NS {zones.NS_HOST}.",
    ]
    for r in records:
        rdata = " ".join(_quote(s) for s in r.data) if r.rtype == "TXT" else r.data[0]
        lines.append(f"{r.name} IN {r.rtype} {rdata}")
    return "\n".join(lines) + "\n"


def _dkim(text: str) -> tuple[str, ...]:
    return tuple(text[i : i + 255] for i in range(0, len(text), 255))


def scenario_zones(public: Mapping[str, bytes], ed25519_public: bytes) -> dict[str, list[Record]]:
    """Zone name -> records."""
    main = base64.b64encode(public["main"]).decode()
    ed = base64.b64encode(ed25519_public).decode()
    no_dkim: Dkim | None = None

    def domain(name: str, **kw: object) -> Domain:
        return Domain(name, "untuned scenario", **kw)  # type: ignore[arg-type]

    def sel(text: str) -> Record:
        return Record("sel2048._domainkey", "TXT", _dkim(text))

    mx_hosts = tuple(Record("@", "MX", (f"{10 + n} mx{n}.u-mx11.test.",)) for n in range(1, 12))
    mx_addrs = tuple(Record(f"mx{n}", "A", (f"192.0.2.{n}",)) for n in range(1, 12))
    domains = [
        # redirect= to a name without SPF: permerror (RFC 7208 §6.1).
        domain("u-redirect.test", spf=(("v=spf1 redirect=_spf.u-redirect.test",),)),
        # include: of a record that ends in +all: the whole Internet may send as the domain.
        domain(
            "u-includeall.test",
            spf=(("v=spf1 include:_spf.u-includeall.test -all",),),
            extra=(Record("_spf", "TXT", ("v=spf1 +all",)),),
        ),
        # a/24 passes the server, mx lists 11 hosts: > 10 names per mx (RFC 7208 §4.6.4).
        domain(
            "u-mx11.test",
            mx=None,
            spf=(("v=spf1 a/24 mx -all",),),
            extra=mx_hosts + mx_addrs,
        ),
        domain(
            "u-ed25519.test",
            dkim=no_dkim,
            extra=(sel(f"v=DKIM1; k=ed25519; p={ed}"),),
        ),
        domain("u-dkimtesting.test", dkim=no_dkim, extra=(sel(f"v=DKIM1; k=rsa; t=y; p={main}"),)),
        domain("u-revoked.test", dkim=no_dkim, extra=(sel("v=DKIM1; k=rsa; p="),)),
        domain(
            "u-dkimbase64.test",
            dkim=no_dkim,
            extra=(sel("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC*not-base64*"),),
        ),
        # DMARC only at the organisational domain; the address is on help.u-orgdmarc.test.
        domain("u-orgdmarc.test"),
        domain("help.u-orgdmarc.test", dmarc=None),
        # p=reject for the organisation, sp=none for its subdomains.
        domain(
            "u-spnone.test",
            dmarc=("v=DMARC1; p=reject; sp=none; rua=mailto:dmarc@u-spnone.test",),
        ),
        domain("sub.u-spnone.test", dmarc=None),
        # a semicolon missing: receivers read v=DMARC1 p=reject as one (invalid) tag.
        domain(
            "u-dmarcsyntax.test",
            dmarc=("v=DMARC1 p=reject; rua=mailto:dmarc@u-dmarcsyntax.test",),
        ),
        domain(
            "u-twodmarc.test",
            extra=(Record("_dmarc", "TXT", ("v=DMARC1; p=none",)),),
        ),
        # MX -> CNAME (RFC 2181 §10.3: an MX must name a host, not an alias).
        domain(
            "u-mxcname.test",
            mx="mx.u-mxcname.test",
            extra=(Record("mx", "CNAME", (f"{MAIL_HOST}.",)),),
        ),
        # The outbound server has an IPv6 address only (and no PTR for it).
        domain(
            "u-v6only.test",
            spf=(("v=spf1 a -all",),),
            extra=(Record("mail", "AAAA", (V6_ADDR,)),),
        ),
        # 127.0.0.2's PTR names other.u-ptr.test, which resolves to another address.
        domain(
            "u-ptr.test",
            spf=(("v=spf1 ip4:127.0.0.0/24 -all",),),
            extra=(
                Record("mail", "A", (PTR_ADDR,)),
                Record("other", "A", ("127.0.0.3",)),
            ),
        ),
        # The outbound server's name is a CNAME loop.
        domain(
            "u-cnameloop.test",
            extra=(
                Record("mail", "CNAME", ("loop.u-cnameloop.test.",)),
                Record("loop", "CNAME", ("mail.u-cnameloop.test.",)),
            ),
        ),
    ]
    out = {d.name: zones.domain_records(d, public) for d in domains}
    out[PTR_ZONE] = [Record("@", "PTR", ("other.u-ptr.test.",))]
    out[V6_ZONE] = []
    return out


SCENARIOS: dict[str, Scenario] = {
    s.address.split("@")[1]: s
    for s in (
        Scenario(
            "support@u-redirect.test",
            {"spf.lookups": "fail", "spf.authorizes": "fail", "dmarc.alignment": "pass"},
        ),
        Scenario("support@u-includeall.test", {"spf.record": "fail"}),
        Scenario("support@u-mx11.test", {"spf.lookups": "fail"}),
        Scenario("support@u-ed25519.test", {}, key="ed25519"),
        Scenario("support@u-dkimtesting.test", {"dkim.key": "warn"}),
        Scenario(
            "support@u-revoked.test",
            {
                "dkim.key": "fail",
                "dkim.strength": "skip",
                "dkim.key-match": "skip",
                "dmarc.alignment": "warn",
            },
        ),
        Scenario(
            "support@u-dkimbase64.test",
            {
                "dkim.key": "fail",
                "dkim.strength": "skip",
                "dkim.key-match": "skip",
                "dmarc.alignment": "warn",
            },
        ),
        Scenario("support@help.u-orgdmarc.test", {}),
        Scenario("support@sub.u-spnone.test", {"dmarc.policy": "warn"}),
        Scenario(
            "support@u-dmarcsyntax.test",
            {"dmarc.record": "fail", "dmarc.policy": "skip", "dmarc.alignment": "skip"},
        ),
        Scenario(
            "support@u-twodmarc.test",
            {"dmarc.record": "fail", "dmarc.policy": "skip", "dmarc.alignment": "skip"},
        ),
        Scenario("support@u-mxcname.test", {"dns.mx": "warn"}),
        Scenario(
            "support@u-v6only.test",
            {"dns.reverse": "fail", "spf.authorizes": "fail", "dmarc.alignment": "pass"},
            host="mail.u-v6only.test",
        ),
        Scenario("support@u-ptr.test", {"dns.reverse": "fail"}, host="mail.u-ptr.test"),
        Scenario(
            "support@u-cnameloop.test",
            {
                "dns.server-address": "fail",
                "dns.reverse": "skip",
                "spf.authorizes": "skip",
                "dmarc.alignment": "pass",
            },
            host="mail.u-cnameloop.test",
        ),
    )
}


class ScenarioNsd(NsdServer):
    """NSD serving the lab's zones plus ``extra`` (zone name -> records)."""

    def __init__(
        self,
        directory: Path,
        public_keys: Mapping[str, bytes],
        extra: Mapping[str, list[Record]],
    ) -> None:
        super().__init__(directory, public_keys)
        self._last_serial = 0
        self._last_stamp = 0.0
        self.extra = {name: list(records) for name, records in extra.items()}

    def write_config(self) -> None:
        super().write_config()
        # The generated corpus asks for dozens of >512-byte records at once, each over TCP
        # after a truncated UDP answer; at the lab's 20 connections NSD closes the surplus.
        self.conf.write_text(self.conf.read_text().replace("tcp-count: 20", "tcp-count: 500"))
        lines = []
        for name, records in self.extra.items():
            (self.directory / "zones" / f"{name}.zone").write_text(render(name, records))
            lines.append(f'zone:\n  name: "{name}"\n  zonefile: "{name}.zone"\n')
        with self.conf.open("a") as conf:
            conf.write("\n" + "\n".join(lines))

    def publish(self, zone: str, records: list[Record], probe: tuple[str, str]) -> None:
        """Replace ``zone``'s records, reload, and wait until the new data is served (``probe``,
        the name and type the caller cares about, only names it in the error)."""
        self.publish_many({zone: records}, what=f"{zone} ({probe[0]} {probe[1]})")

    def publish_many(self, changed: Mapping[str, list[Record]], what: str = "") -> None:
        """Replace the records of every zone in ``changed`` with one reload, and wait until all
        of them are served (NSD reloads in the background after SIGHUP)."""
        # Strictly increasing: two publishes within one second (a fix of two records) must not
        # share a serial, or the wait below would see the first reload and return too early.
        serial = max(int(time.time()), self._last_serial + 1)
        self._last_serial = serial
        # NSD compares mtimes: make sure these are newer, by whole seconds too.
        stamp = max(time.time() + 1, self._last_stamp + 1)
        self._last_stamp = stamp
        for zone, records in changed.items():
            self.extra[zone] = list(records)
            path = self.directory / "zones" / f"{zone}.zone"
            text = render(zone, records).replace(" 1 3600 600", f" {serial} 3600 600", 1)
            path.write_text(text)
            os.utime(path, (stamp, stamp))
        assert self.pid is not None
        os.kill(self.pid, signal.SIGHUP)
        self._wait_for_serial(list(changed), serial, what or ", ".join(changed))

    def _wait_for_serial(self, names: list[str], serial: int, what: str) -> None:
        import dns.message
        import dns.query
        import dns.rdatatype

        def current(zone: str) -> bool:
            reply = dns.query.udp(
                dns.message.make_query(zone, "SOA"), self.host, port=self.port, timeout=1
            )
            soa = [r for rrset in reply.answer for r in rrset if r.rdtype == dns.rdatatype.SOA]
            return bool(soa) and soa[0].serial == serial

        deadline = time.monotonic() + 10 + len(names) / 50
        waiting = list(names)
        # While NSD reloads, server processes of the old and the new zone data answer side by
        # side: one new serial is not enough, every answer must have it for a while.
        in_a_row = 0
        while time.monotonic() < deadline:
            waiting = [zone for zone in waiting if not current(zone)]
            in_a_row = in_a_row + 1 if not waiting and current(names[0]) else 0
            if in_a_row >= 10:
                return
            time.sleep(0.02)
        raise AssertionError(f"NSD did not reload {what} within the wait ({waiting[:5]} old)")


def ed25519_key(directory: Path) -> tuple[Path, bytes]:
    """A fresh ed25519 private key (PEM path) and its raw public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / "dkim-ed25519.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return path, raw


__all__ = ["MAIL_ADDR", "SCENARIOS", "Scenario", "ScenarioNsd", "ed25519_key", "scenario_zones"]
