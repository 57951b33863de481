"""DNS for every part of smtpconn: classified answers, the in-run cache and its blocking twin for
pyspf/dkimpy, the resolver factories, tag-list parsing and the DMARC tree walk.

It sits below ``checks``, ``relay``, ``smtp`` and ``profile`` and imports none of them, so verify
and the relay share one implementation of each.
"""

import dns._features

from smtpconn.dns.answers import DnsAnswer, DnsOutcome, DnsUnavailable, Resolver
from smtpconn.dns.cache import CachingResolver

# smtpconn asks nameservers over UDP and TCP only. Where httpx2 and h2 are installed (checkdmarc,
# the benchmark's peer, brings them), dnspython imports them for DNS over HTTPS as soon as
# dns.query is imported: ~0.1 s of start-up for every command that resolves anything.
dns._features.force("doh", False)

__all__ = ["CachingResolver", "DnsAnswer", "DnsOutcome", "DnsUnavailable", "Resolver"]
