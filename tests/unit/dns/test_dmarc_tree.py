"""The DMARC tree walk (RFC 9989 §4.10) on a co.uk-style name, answered by a fake Resolver."""

from __future__ import annotations

import pytest

from smtpconn.dns import DnsUnavailable
from smtpconn.dns.dmarc_tree import aligned, find_policy, organizational_domain, walk_names
from tests.unit.checks.fakedns import FakeResolver

PSD = {("_dmarc.co.uk", "TXT"): ["v=DMARC1; p=none; psd=y"]}
ORG = {("_dmarc.example.co.uk", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"]}


def test_the_walk_asks_every_ancestor_down_to_two_labels() -> None:
    assert walk_names("Help.Example.co.uk.") == ["help.example.co.uk", "example.co.uk", "co.uk"]
    deep = ".".join(f"l{i}" for i in range(12)) + ".example.co.uk"
    assert len(walk_names(deep)) == 1 + 6  # the name, then its last 7 labels down to two


async def test_policy_of_a_subdomain_is_found_below_the_public_suffix() -> None:
    fake = FakeResolver({**PSD, **ORG})
    lookup = await find_policy(fake, "help.example.co.uk")
    assert lookup.at == "example.co.uk" and lookup.inherited
    assert lookup.records == ("v=DMARC1; p=reject; sp=quarantine",)
    assert ("_dmarc.co.uk", "TXT") not in fake.questions  # the walk stopped at the record


async def test_a_lookup_that_could_not_tell_stops_the_walk() -> None:
    fake = FakeResolver(ORG, broken={"_dmarc.help.example.co.uk"})
    lookup = await find_policy(fake, "help.example.co.uk")
    assert lookup.at is None and "SERVFAIL" in lookup.error
    assert lookup.asked == ("help.example.co.uk",)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ({**PSD, **ORG}, "example.co.uk"),  # psd=y above: the name one label below it
        (PSD, "example.co.uk"),  # psd=y decides even without a record below it
        (ORG, "example.co.uk"),  # the record with the fewest labels
        (
            {("_dmarc.help.example.co.uk", "TXT"): ["v=DMARC1; p=reject; psd=n"]},
            "help.example.co.uk",
        ),
        ({}, "help.example.co.uk"),  # no record anywhere: the domain itself
    ],
)
async def test_organizational_domain(
    records: dict[tuple[str, str], list[str]], expected: str
) -> None:
    assert await organizational_domain(FakeResolver(records), "help.example.co.uk") == expected


async def test_relaxed_alignment_follows_the_organizational_domain() -> None:
    fake = FakeResolver({**PSD, **ORG})
    assert await aligned(fake, "mail.example.co.uk", "help.example.co.uk", strict=False)
    assert not await aligned(fake, "mail.example.co.uk", "help.example.co.uk", strict=True)
    # The old "last two labels" guess called every co.uk domain aligned with every other.
    assert not await aligned(fake, "attacker.co.uk", "help.example.co.uk", strict=False)
    assert not await aligned(fake, "example.com", "help.example.co.uk", strict=False)


async def test_alignment_that_could_not_tell_raises() -> None:
    fake = FakeResolver(ORG, broken={"_dmarc.co.uk"})
    with pytest.raises(DnsUnavailable):
        await aligned(fake, "mail.example.co.uk", "help.example.co.uk", strict=False)
