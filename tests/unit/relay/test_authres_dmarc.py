"""The relay's Authentication-Results use the DMARC tree walk (not the last two labels), with the
SPF/DKIM lookups and the DMARC walk answered by one fake Resolver."""

from __future__ import annotations

from smtpconn.relay.authres import AuthInput, authentication_results
from tests.unit.checks.fakedns import FakeResolver

CLIENT = "192.0.2.25"
RECORDS = {
    ("_dmarc.co.uk", "TXT"): ["v=DMARC1; p=none; psd=y"],
    ("_dmarc.example.co.uk", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"],
    ("example.co.uk", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
    ("help.example.co.uk", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
    ("attacker.co.uk", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
}


def message(sender: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <support@helpdesk.test>\r\nSubject: hi\r\n\r\nbody\r\n".encode()
    )


async def results(mail_from: str, author: str, fake: FakeResolver) -> str:
    inp = AuthInput(
        client_ip=CLIENT, helo="mx.example.co.uk", mail_from=mail_from, message=message(author)
    )
    return await authentication_results(inp, "relay.helpdesk.test", 5, fake)


async def test_a_subdomain_gets_its_organizational_domains_sp() -> None:
    fake = FakeResolver(RECORDS)
    header = await results("x@help.example.co.uk", "x@help.example.co.uk", fake)
    assert "spf=pass smtp.mailfrom=help.example.co.uk" in header
    assert "dmarc=pass (p=quarantine) header.from=help.example.co.uk" in header
    assert ("_dmarc.co.uk", "TXT") not in fake.questions  # never the public suffix's policy


async def test_relaxed_alignment_within_the_organizational_domain() -> None:
    header = await results("bounce@example.co.uk", "x@help.example.co.uk", FakeResolver(RECORDS))
    assert "dmarc=pass (p=quarantine) header.from=help.example.co.uk" in header


async def test_another_domain_under_the_public_suffix_is_not_aligned() -> None:
    # SPF passes for attacker.co.uk; "last two labels" called that aligned with example.co.uk.
    header = await results("x@attacker.co.uk", "x@help.example.co.uk", FakeResolver(RECORDS))
    assert "spf=pass smtp.mailfrom=attacker.co.uk" in header
    assert "dmarc=fail (p=quarantine) header.from=help.example.co.uk" in header


async def test_a_dmarc_lookup_that_could_not_tell_is_temperror() -> None:
    fake = FakeResolver(RECORDS, broken={"_dmarc.help.example.co.uk"})
    header = await results("x@help.example.co.uk", "x@help.example.co.uk", fake)
    assert "dmarc=temperror header.from=help.example.co.uk" in header
