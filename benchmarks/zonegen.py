"""N generated mail domains, each a copy of the lab's good domain, served by a real NSD.

Every generated domain ``bNNNN.bench.test`` (a zone of its own) has exactly the records of
``lab.zones.GOOD``: apex A 127.0.0.1, MX -> mail.good.test (the lab's Postfix, hosted-mail
style), SPF ``v=spf1 mx -all``, DKIM ``sel2048`` (the lab's 2048-bit key "main"), DMARC
``p=reject`` with strict alignment, MTA-STS and TLS-RPT TXT, and ``mta-sts`` A. The NSD also
serves every lab zone (good.test for mail.good.test, the reverse zone for its PTR), so the
generated domains resolve completely against this one server.

The NSD is the lab's own ``lab.dns.NsdServer`` (its config, foreground process, clean stop);
only the extra zone files and their ``zone:`` entries are added here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from lab import zones
from lab.dns import NsdServer

BENCH_PARENT = "bench.test"


def domain_names(n: int) -> list[str]:
    return [f"b{i:04d}.{BENCH_PARENT}" for i in range(1, n + 1)]


def bench_domain(name: str) -> zones.Domain:
    return dataclasses.replace(
        zones.GOOD,
        name=name,
        purpose="benchmark copy of good.test",
        extra=(zones.Record("mta-sts", "A", (zones.MAIL_ADDR,)),),
    )


def zone_text(domain: zones.Domain, public_keys: Mapping[str, bytes]) -> str:
    lines = [
        f"$ORIGIN {domain.name}.",
        "$TTL 60",
        f"@ IN SOA {zones.NS_HOST}. hostmaster.good.test. 1 3600 600 86400 60",
        f"@ IN NS {zones.NS_HOST}.",
    ]
    for r in zones.domain_records(domain, public_keys):
        if r.rtype == "TXT":
            rdata = " ".join(
                '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in r.data
            )
        else:
            rdata = r.data[0]
        lines.append(f"{r.name} IN {r.rtype} {rdata}")
    return "\n".join(lines) + "\n"


class BenchNsd(NsdServer):
    """The lab's NSD, serving the lab zones plus ``names`` (generated good-domain copies)."""

    def __init__(self, directory: Path, public_keys: Mapping[str, bytes], names: list[str]) -> None:
        super().__init__(directory, public_keys)
        self.names = list(names)

    def write_config(self) -> None:
        super().write_config()
        zone_dir = self.directory / "zones"
        stanzas = []
        for name in self.names:
            (zone_dir / f"{name}.zone").write_text(zone_text(bench_domain(name), self.public_keys))
            stanzas.append(f'zone:\n  name: "{name}"\n  zonefile: "{name}.zone"\n')
        with self.conf.open("a") as conf:
            conf.write("\n" + "\n".join(stanzas))
