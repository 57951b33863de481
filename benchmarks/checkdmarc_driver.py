"""Run checkdmarc (the peer) over the benchmark domains; a separate process, timed from outside.

    python -m benchmarks.checkdmarc_driver --nameserver 127.0.0.1:PORT --smtp-port PORT \
        [--full] DOMAIN...

Why a driver and not the ``checkdmarc`` command itself: its ``--nameserver`` takes a bare IP
(port 53 only) and its STARTTLS probe connects to port 25 of the MX host found through the
*system* resolver, and the lab can change neither without touching the machine (port 53/25,
/etc/hosts). So this driver calls checkdmarc's own library functions (the ones its CLI calls)
with these two things redirected, and nothing else changed:

* DNS: ``dns.nameserver.Do53Nameserver(host, port)`` (checkdmarc accepts Nameserver objects);
* the MX host's address and port 25: ``socket.getaddrinfo`` answers names under ``.test`` from
  the same nameserver (through the same latency proxy) and maps port 25 to ``--smtp-port``.

Default: only the checks smtpconn also makes (MX with the STARTTLS probe, SPF, DMARC), domain
after domain, as ``checkdmarc.check_domains`` does. ``--full``: ``check_domains`` itself with
``check_mx_tls=True`` (also SOA, NS, DNSSEC, MTA-STS, TLS-RPT and BIMI), as the CLI runs it.
Prints one JSON object: how many domains each check found valid.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any


def _patch_getaddrinfo(nameserver: tuple[str, int], smtp_port: int) -> None:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver[0]]
    resolver.port = nameserver[1]
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.rstrip(".").endswith(".test"):
            answer = resolver.resolve(host, "A", search=False)
            host = str(answer[0])
        if port in (25, "25", "smtp"):
            port = smtp_port
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nameserver", required=True, help="HOST:PORT")
    ap.add_argument("--smtp-port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("domains", nargs="+")
    args = ap.parse_args(argv)
    host, _, port = args.nameserver.rpartition(":")
    _patch_getaddrinfo((host, int(port)), args.smtp_port)

    import checkdmarc  # type: ignore[import-untyped]
    from dns.nameserver import Do53Nameserver

    ns = [Do53Nameserver(host, int(port))]
    counts = {"domains": 0, "spf_valid": 0, "dmarc_valid": 0, "mx_found": 0, "starttls": 0}
    if args.full:
        results = checkdmarc.check_domains(
            args.domains, check_mx_tls=True, nameservers=ns, timeout=args.timeout
        )
        per_domain = results if isinstance(results, list) else [results]
    else:
        per_domain = []
        for domain in args.domains:
            per_domain.append(
                {
                    "mx": checkdmarc.check_mx(
                        domain, check_mx_tls=True, nameservers=ns, timeout=args.timeout
                    ),
                    "spf": checkdmarc.check_spf(domain, nameservers=ns, timeout=args.timeout),
                    "dmarc": checkdmarc.check_dmarc(domain, nameservers=ns, timeout=args.timeout),
                }
            )
    for r in per_domain:
        counts["domains"] += 1
        counts["spf_valid"] += bool(r["spf"].get("valid"))
        counts["dmarc_valid"] += bool(r["dmarc"].get("valid"))
        hosts = r["mx"].get("hosts", [])
        counts["mx_found"] += bool(hosts)
        counts["starttls"] += bool(hosts) and all(h.get("starttls") for h in hosts)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
