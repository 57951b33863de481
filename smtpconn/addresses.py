"""Parsing and normalising the things a user types: mail addresses, host names, HOST[:PORT].

Everything that later reaches an SMTP command or a message header passes through here first, so
the rules are strict: no control characters (CR/LF header injection), RFC 5321 length limits, and
IDN domains stored as their A-label (``xn--…``) so that comparisons and DNS lookups are exact.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from smtpconn.errors import UsageError

# RFC 5322 atext: the characters allowed in a dot-atom local part without quoting.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 253  # RFC 1035 presentation form without the trailing dot
MAX_ADDRESS = 254  # RFC 5321 path limit (256) minus the angle brackets


def _reject_controls(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise UsageError(
            f"{what} {value!r} contains a control character (CR, LF, tab or similar)",
            fix="type it on one line without control characters",
        )


def _to_alabel(candidate: str, domain: str, what: str) -> str:
    import idna

    try:
        return str(idna.encode(candidate, uts46=True).decode("ascii").lower())
    except idna.IDNAError as exc:
        raise UsageError(
            f"{what} {domain!r} is not a valid domain name: {exc}",
            fix="use letters, digits and hyphens in dot-separated labels, e.g. example.com",
        ) from None


# Cached: a profile of thousands of addresses names the same few domains and servers over and
# over, and every command reads all of them (both functions are pure; errors are not cached).
@functools.lru_cache(maxsize=4096)
def normalise_domain(domain: str, *, what: str = "domain") -> str:
    """Return the lower-case A-label form of ``domain`` or raise ``UsageError``."""
    _reject_controls(domain, what)
    candidate = domain.strip().rstrip(".")
    if not candidate:
        raise UsageError(f"{what} is empty", fix="give a domain such as example.com")
    if candidate.isascii() and "xn--" not in candidate.lower():
        # The common case needs no IDNA processing (and no import of the idna tables, which
        # would slow every command's start-up): LDH labels are checked below.
        alabel = candidate.lower()
    else:
        alabel = _to_alabel(candidate, domain, what)
    if len(alabel) > MAX_DOMAIN:
        raise UsageError(
            f"{what} {domain!r} is {len(alabel)} characters long; the limit is {MAX_DOMAIN}",
            fix="use a shorter domain",
        )
    labels = alabel.split(".")
    if len(labels) < 2:
        raise UsageError(
            f"{what} {domain!r} has a single label",
            fix="use a fully qualified domain such as example.com",
        )
    for label in labels:
        if not _LDH_LABEL.fullmatch(label):
            raise UsageError(
                f"{what} {domain!r} has an invalid label {label!r}",
                fix="labels are 1-63 letters, digits or hyphens, not starting or ending with '-'",
            )
    return alabel


def domain_for_display(alabel: str) -> str:
    """The U-label form of a stored A-label domain (for people), or the A-label if not IDN."""
    if "xn--" not in alabel:
        return alabel
    import idna

    try:
        return str(idna.decode(alabel))
    except idna.IDNAError:
        return alabel


@dataclass(frozen=True, slots=True)
class MailAddress:
    """A validated support address: local part as typed, domain as a lower-case A-label."""

    local: str
    domain: str

    @property
    def ascii(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def display(self) -> str:
        return f"{self.local}@{domain_for_display(self.domain)}"

    @property
    def key(self) -> str:
        """The identity used to compare addresses: the domain is case-insensitive (RFC 5321
        §2.4) and already lower-cased; the local part is compared as written."""
        return self.ascii

    def __str__(self) -> str:
        return self.ascii


def parse_address(value: str) -> MailAddress:
    """Parse a bare ``local@domain`` address (no display name, no angle brackets)."""
    _reject_controls(value, "address")
    text = value.strip()
    if not text:
        raise UsageError("the address is empty", fix="give an address such as support@example.com")
    if text.count("@") != 1:
        raise UsageError(
            f"address {value!r} must contain exactly one '@'",
            fix="give a bare address such as support@example.com (no name, no <>)",
        )
    local, domain = text.split("@")
    if not local:
        raise UsageError(
            f"address {value!r} has an empty local part", fix="e.g. support@example.com"
        )
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise UsageError(
            f"the local part of {value!r} is longer than {MAX_LOCAL_PART} octets",
            fix="use a shorter local part",
        )
    if not _DOT_ATOM.fullmatch(local):
        raise UsageError(
            f"the local part {local!r} of {value!r} has characters that need quoting in mail",
            fix="use letters, digits and . _ + - (no spaces, quotes, brackets or non-ASCII)",
        )
    address = MailAddress(
        local=local, domain=normalise_domain(domain, what="the domain of address")
    )
    if len(address.ascii) > MAX_ADDRESS:
        raise UsageError(
            f"address {value!r} is longer than {MAX_ADDRESS} characters", fix="use a shorter one"
        )
    return address


@functools.lru_cache(maxsize=4096)
def normalise_host(value: str) -> str:
    """A server host name (A-label, lower case) or an IP address literal (without brackets)."""
    _reject_controls(value, "host")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    return normalise_domain(text, what="host")


def parse_port(value: str | int, *, what: str = "port") -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} {value!r} is not a number", fix="use 1-65535, e.g. 587") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"{what} is out of range ({port})", fix="use 1-65535, e.g. 587")
    return port


def parse_host_port(value: str, *, default_port: int | None) -> tuple[str, int | None]:
    """Split ``HOST[:PORT]``; IPv6 literals need brackets when a port follows: ``[::1]:587``."""
    _reject_controls(value, "server")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"server {value!r} has an unclosed '['", fix="write [::1]:587")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"server {value!r} is malformed", fix="write [::1]:587")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        # No colon, or a bare IPv6 address (several colons) without a port.
        host, port_text = text, None
    port = (
        parse_port(port_text, what=f"the port in {value!r}")
        if port_text is not None
        else default_port
    )
    return normalise_host(host), port
