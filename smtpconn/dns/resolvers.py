"""Resolver factories shared by checks, send-test and the relay.

One place decides which nameservers are asked, so that ``--resolver`` (and ``SMTPCONN_RESOLVER``)
means the same thing to every part of smtpconn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from smtpconn.addresses import parse_host_port
from smtpconn.errors import UsageError

if TYPE_CHECKING:  # dnspython is imported lazily: the CLI's start-up path does not need it.
    import dns.asyncresolver
    import dns.resolver

DNS_PORT = 53


def parse_resolver(
    value: str, *, source: str = "resolver", fix: str = "e.g. 127.0.0.1:5353 or [::1]:53"
) -> tuple[str, int]:
    """``HOST[:PORT]`` of a nameserver; the host must be an IP address (we can't resolve the
    resolver). ``source`` names where the value came from and ``fix`` how to give a good one,
    for the error message (the CLI names its option and variable)."""
    import ipaddress

    def not_an_address() -> UsageError:
        return UsageError(f"{source} {value!r} must be an IP address (optionally :PORT)", fix=fix)

    try:
        host, port = parse_host_port(value, default_port=DNS_PORT)
        ipaddress.ip_address(host)
    except (UsageError, ValueError):
        # A host name (or garbage) is not a resolver: say that, not why it isn't a host name.
        raise not_an_address() from None
    assert port is not None
    return host, port


def parse_resolver_list(
    value: str, *, source: str = "SMTPCONN_RESOLVER", fix: str = "e.g. 127.0.0.1:5353 or [::1]:53"
) -> tuple[tuple[str, int], ...]:
    """The SMTPCONN_RESOLVER variable: one or more resolvers separated by commas or spaces."""
    return tuple(
        parse_resolver(item, source=source, fix=fix) for item in value.replace(",", " ").split()
    )


_R = TypeVar("_R", bound="dns.resolver.BaseResolver")


def _configured(kind: type[_R], nameservers: tuple[tuple[str, int], ...], timeout: float) -> _R:
    import dns.nameserver

    if nameservers:
        resolver = kind(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
    else:
        resolver = kind()
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def make_resolver(
    nameservers: tuple[tuple[str, int], ...], *, timeout: float
) -> dns.asyncresolver.Resolver:
    """An asynchronous stub resolver asking ``nameservers`` (or the system's when empty)."""
    import dns.asyncresolver

    return _configured(dns.asyncresolver.Resolver, nameservers, timeout)


def make_sync_resolver(
    nameservers: tuple[tuple[str, int], ...], *, timeout: float
) -> dns.resolver.Resolver:
    """The blocking twin of :func:`make_resolver`, for code that already runs in a worker thread
    and has no event loop to hand lookups to (asking the same servers, with the same timeout)."""
    import dns.resolver

    return _configured(dns.resolver.Resolver, nameservers, timeout)


async def resolve_host(
    host: str, nameservers: tuple[tuple[str, int], ...], *, timeout: float
) -> str | None:
    """The address to connect to for ``host``, asked of ``nameservers`` (A first, then AAAA).

    Returns ``host`` itself when it is an address literal, and None when no nameservers are
    configured (the OS resolver then decides) or the name does not resolve (the SMTP session then
    reports it as unresolvable). Every SMTP client of smtpconn goes through this so that
    ``--resolver`` means the same thing for a connection as for the checks.
    """
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not nameservers:
        return None
    import dns.exception

    resolver = make_resolver(nameservers, timeout=timeout)
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype, search=False)
        except dns.exception.DNSException:
            continue
        return str(answer[0])
    return None


def mx_hosts(
    domain: str, nameservers: tuple[tuple[str, int], ...], *, timeout: float
) -> tuple[tuple[str, ...], str | None]:
    """The domain's MX host names, most preferred first, and why they could not be read (None
    when the answer was clear: a domain without MX gives no names and no reason). Blocking."""
    import dns.exception
    import dns.resolver

    resolver = make_sync_resolver(nameservers, timeout=timeout)
    try:
        answer = resolver.resolve(domain, "MX", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return (), None
    except dns.exception.DNSException as exc:
        return (), f"{type(exc).__name__} from {_described(nameservers)}"
    ordered = sorted(answer, key=lambda r: r.preference)
    return tuple(str(r.exchange).rstrip(".").lower() for r in ordered), None


def _described(nameservers: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{h}:{p}" for h, p in nameservers) or "the system resolver"
