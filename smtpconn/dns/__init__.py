"""DNS for every part of smtpconn: classified answers, the in-run cache and its blocking twin for
pyspf/dkimpy, the resolver factories, tag-list parsing and the DMARC tree walk.

It sits below ``checks``, ``relay``, ``smtp`` and ``profile`` and imports none of them, so verify
and the relay share one implementation of each.
"""

from smtpconn.dns.answers import DnsAnswer, DnsOutcome, DnsUnavailable, Resolver
from smtpconn.dns.cache import CachingResolver

__all__ = ["CachingResolver", "DnsAnswer", "DnsOutcome", "DnsUnavailable", "Resolver"]
