"""Parsing what users type: addresses, hosts and HOST[:PORT]."""

from __future__ import annotations

import pytest

from smtpconn.addresses import parse_address, parse_host_port
from smtpconn.errors import UsageError


@pytest.mark.parametrize(
    ("typed", "stored", "shown"),
    [
        ("support@Example.COM", "support@example.com", "support@example.com"),
        ("Support@example.com", "Support@example.com", "Support@example.com"),
        ("help@bücher.example", "help@xn--bcher-kva.example", "help@bücher.example"),
        ("help@XN--BCHER-KVA.example", "help@xn--bcher-kva.example", "help@bücher.example"),
        (
            " first.last+tag@example.org ",
            "first.last+tag@example.org",
            "first.last+tag@example.org",
        ),
    ],
)
def test_addresses_are_normalised(typed: str, stored: str, shown: str) -> None:
    address = parse_address(typed)
    assert (address.ascii, address.display) == (stored, shown)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("mail.example.com", ("mail.example.com", None)),
        ("MAIL.example.com:2525", ("mail.example.com", 2525)),
        ("192.0.2.1:465", ("192.0.2.1", 465)),
        ("[2001:db8::1]:587", ("2001:db8::1", 587)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("smtp.bücher.example", ("smtp.xn--bcher-kva.example", None)),
    ],
)
def test_host_port(typed: str, expected: tuple[str, int | None]) -> None:
    assert parse_host_port(typed, default_port=None) == expected


@pytest.mark.parametrize(
    "typed", ["[2001:db8::1", "[::1]x", "host:0", "host:99999", "ho st.example", "-bad.example"]
)
def test_bad_host_port(typed: str) -> None:
    with pytest.raises(UsageError):
        parse_host_port(typed, default_port=None)


@pytest.mark.parametrize("typed", ["nonsense", "mail.example.com", "mail.example.com:53", "x:99"])
def test_a_resolver_must_be_an_address_and_the_error_says_so(typed: str) -> None:
    from smtpconn.dns.resolvers import parse_resolver, parse_resolver_list

    with pytest.raises(UsageError, match="must be an IP address"):
        parse_resolver(typed)
    with pytest.raises(UsageError, match=r"SMTPCONN_RESOLVER .* must be an IP address"):
        parse_resolver_list(f"127.0.0.1, {typed}")
    assert parse_resolver("[::1]:5353") == ("::1", 5353)
    assert parse_resolver("192.0.2.53") == ("192.0.2.53", 53)
