"""dns.blocklist judged from hand-built answers (11.22.33.x: the checked addresses must be global,
which no documentation prefix is): listed fails, a list's error codes and
rewritten NXDOMAINs are "could not tell", private addresses are not asked."""

from __future__ import annotations

import asyncio

import pytest

from smtpconn.addresses import parse_address
from smtpconn.checks.blocklist import (
    DEFAULT_BLOCKLISTS,
    check_blocklist,
    parse_blocklists,
    query_name,
)
from smtpconn.checks.model import CheckResult, Status
from smtpconn.errors import UsageError
from smtpconn.profile.model import (
    AuthMechanism,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef
from tests.unit.checks.fakedns import FakeResolver, context

SERVER = "mail.ex.test"


def entry(host: str = SERVER) -> SupportAddress:
    return SupportAddress(
        parse_address("support@ex.test"),
        Mode.OUTBOUND_ONLY,
        Workflow.AUTHENTICATED,
        OutboundServer(
            host, 587, Security.STARTTLS, AuthMechanism.AUTO, "u", SecretRef("env", "X")
        ),
    )


def run(
    records: dict[tuple[str, str], list[str]], *, host: str = SERVER, **kw: object
) -> CheckResult:
    fake = FakeResolver({(SERVER, "A"): ["11.22.33.44"], **records}, broken=kw.pop("broken", None))  # type: ignore[arg-type]
    return asyncio.run(check_blocklist(context(fake, **kw), entry(host)))


ZEN = "44.33.22.11.zen.spamhaus.org"


def test_query_names_reverse_octets_and_nibbles() -> None:
    assert query_name("11.22.33.44", "zen.spamhaus.org") == ZEN
    v6 = query_name("2001:db8::1", "bl.test")
    assert v6.startswith("1.0.0.0.") and v6.endswith(".8.b.d.0.1.0.0.2.bl.test")
    assert len(v6.split(".")) == 32 + 2


def test_not_listed_anywhere_passes_naming_the_lists() -> None:
    result = run({})
    assert result.status is Status.PASS
    assert "none of 6 blocklists" in result.summary and "Spamhaus ZEN" in result.summary


def test_listed_fails_with_the_meaning_and_the_delisting_page() -> None:
    result = run({(ZEN, "A"): ["127.0.0.4"], (ZEN, "TXT"): ["https://check.spamhaus.org/x"]})
    assert result.status is Status.FAIL
    assert "11.22.33.44 on Spamhaus ZEN" in result.summary and "XBL" in result.summary
    assert "https://check.spamhaus.org/" in result.fix
    assert "https://check.spamhaus.org/x" in result.detail


@pytest.mark.parametrize("code", ["127.255.255.254", "127.255.255.255", "127.255.255.252"])
def test_spamhaus_error_codes_are_could_not_tell_never_listed(code: str) -> None:
    result = run({(ZEN, "A"): [code]})
    assert result.status is Status.ERROR
    assert "could not tell" in result.summary and "Spamhaus ZEN" in result.summary
    assert "public resolvers" in result.fix


def test_an_answer_outside_127_is_a_rewriting_resolver_not_a_listing() -> None:
    result = run({(ZEN, "A"): ["192.0.2.80"]})
    assert result.status is Status.ERROR and "rewrites" in result.detail


def test_an_unanswered_list_is_could_not_tell() -> None:
    result = run({}, broken={ZEN})
    assert result.status is Status.ERROR and "SERVFAIL" in result.detail


def test_a_listing_outweighs_another_list_that_could_not_tell() -> None:
    spamcop = "44.33.22.11.bl.spamcop.net"
    result = run({(spamcop, "A"): ["127.0.0.2"]}, broken={ZEN})
    assert result.status is Status.FAIL and "SpamCop" in result.summary


def test_private_addresses_are_not_asked_and_egress_addresses_are() -> None:
    private = {("10.0.0.5", "A"): []}
    assert run(private, host="10.0.0.5").status is Status.SKIP
    listed = run(
        {("45.33.22.11.zen.spamhaus.org", "A"): ["127.0.0.2"]},
        host="10.0.0.5",
        egress_addresses=("11.22.33.45",),
    )
    assert listed.status is Status.FAIL and "11.22.33.45" in listed.summary
    assert "not asked (private): 10.0.0.5" in listed.detail


def test_configured_lists_replace_the_defaults() -> None:
    lists = parse_blocklists(["bl.example.net=https://bl.example.net/rm, zen.spamhaus.org"], "x")
    assert [b.zone for b in lists] == ["bl.example.net", "zen.spamhaus.org"]
    assert lists[0].delist == "https://bl.example.net/rm"
    assert lists[1].codes == DEFAULT_BLOCKLISTS[0].codes
    assert parse_blocklists([], "x") == DEFAULT_BLOCKLISTS
    result = run(
        {("44.33.22.11.bl.example.net", "A"): ["127.0.0.9"]},
        blocklists=("bl.example.net=https://bl.example.net/rm",),
    )
    assert result.status is Status.FAIL and "https://bl.example.net/rm" in result.fix


@pytest.mark.parametrize("spec", ["localhost", "bl..test", "a b.test"])
def test_a_bad_list_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="not a blocklist zone"):
        parse_blocklists([spec], "--blocklist")
