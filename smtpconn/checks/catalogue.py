"""Every check id of ``verify``, by family: the catalogue, in one place.

The runner, ``--only``/``--skip`` validation and each family module take their ids from here, so
an id is spelt once. Ids are stable: add new ones, never rename. Pure data, no imports, so the
CLI can read it without loading any check module.
"""

from __future__ import annotations

DNS = ("dns.mx", "dns.server-address", "dns.reverse")
SPF = ("spf.record", "spf.lookups", "spf.authorizes")
DKIM = ("dkim.key", "dkim.strength", "dkim.key-match")
DMARC = ("dmarc.record", "dmarc.policy", "dmarc.alignment")
MTA_STS = ("mta-sts", "mta-sts.policy", "tls-rpt")
TLS_AUTH = (
    "tls.connect",
    "tls.starttls",
    "tls.version",
    "tls.certificate",
    "tls.hostname",
    "tls.expiry",
    "auth.mechanisms",
    "auth.before-tls",
    "auth.token",
    "auth.login",
)

#: Family name -> its ids, in the order results are shown.
FAMILIES: dict[str, tuple[str, ...]] = {
    "dns": DNS,
    "spf": SPF,
    "dkim": DKIM,
    "dmarc": DMARC,
    "mta-sts": MTA_STS,
    "tls-auth": TLS_AUTH,
}

ALL: tuple[str, ...] = tuple(i for ids in FAMILIES.values() for i in ids)
