"""Authentication-Results for a busy sender: the SPF result of the same (client IP, sender, HELO)
and the From domain's DMARC policy are reused for a short time, and a message without a DKIM
signature or ARC set is evaluated without a worker thread; a signature in any spelling still
gets dkimpy, and results that could not tell are never reused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from smtpconn.relay import authres
from smtpconn.relay.authres import AuthInput, Recent, RecentResults, assess
from tests.unit.checks.fakedns import FakeResolver

CLIENT = "192.0.2.25"
OURS = "relay.helpdesk.test"
RECORDS = {
    ("example.co.uk", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
    ("_dmarc.example.co.uk", "TXT"): ["v=DMARC1; p=reject"],
}
SIGNATURE = (
    b"dKiM-SiGnAtUrE: v=1; a=rsa-sha256; d=example.co.uk; s=gone; h=from;\r\n"
    b" bh=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; b=AAAA\r\n"
)


def message(extra: bytes = b"") -> bytes:
    return extra + b"From: <a@example.co.uk>\r\nSubject: hi\r\n\r\nbody\r\n"


def inp(msg: bytes, sender: str = "a@example.co.uk") -> AuthInput:
    return AuthInput(client_ip=CLIENT, helo="mx.example.co.uk", mail_from=sender, message=msg)


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions authres sent to a worker thread."""
    sent: list[str] = []
    real = asyncio.to_thread

    async def counting(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        sent.append(func.__name__)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(authres.asyncio, "to_thread", counting)
    return sent


async def test_a_busy_senders_second_message_asks_no_dns_and_needs_no_thread(
    threads: list[str],
) -> None:
    fake, recent = FakeResolver(RECORDS), RecentResults()
    first = (await assess(inp(message()), 5, fake, recent)).header(OURS, CLIENT)
    asked = sum(fake.questions.values())
    second = (await assess(inp(message()), 5, fake, recent)).header(OURS, CLIENT)
    assert first == second
    assert "spf=pass smtp.mailfrom=example.co.uk" in second and "dkim=none" in second
    assert "dmarc=pass (p=reject)" in second
    assert sum(fake.questions.values()) == asked  # SPF and the DMARC walk: nothing asked again
    assert threads == ["check_spf_dkim"]  # the first message's SPF only


async def test_another_sender_is_evaluated_again(threads: list[str]) -> None:
    fake, recent = FakeResolver(RECORDS), RecentResults()
    await assess(inp(message()), 5, fake, recent)
    verdicts = await assess(inp(message(), sender="x@elsewhere.test"), 5, fake, recent)
    assert verdicts.spf == "none"
    assert fake.questions[("elsewhere.test", "TXT")] == 1
    assert threads == ["check_spf_dkim", "check_spf_dkim"]


async def test_a_signature_in_any_spelling_still_gets_dkimpy(threads: list[str]) -> None:
    fake, recent = FakeResolver(RECORDS), RecentResults()
    await assess(inp(message()), 5, fake, recent)  # the SPF result is now known
    header = (await assess(inp(message(SIGNATURE)), 5, fake, recent)).header(OURS, CLIENT)
    assert "dkim=none" not in header
    assert "header.d=example.co.uk" in header  # dkimpy read the signature (its key is gone)
    assert threads == ["check_spf_dkim", "check_spf_dkim"]


async def test_an_arc_set_still_gets_dkimpy(threads: list[str]) -> None:
    fake, recent = FakeResolver(RECORDS), RecentResults()
    await assess(inp(message()), 5, fake, recent)
    sealed = message(b"ARC-SEAL: i=1; a=rsa-sha256; cv=none; d=example.co.uk; s=x; b=AAAA\r\n")
    verdicts = await assess(inp(sealed), 5, fake, recent)
    assert verdicts.arc is not None and verdicts.arc.cv == "fail"
    assert len(threads) == 2


async def test_results_that_could_not_tell_are_not_kept() -> None:
    broken = FakeResolver(RECORDS, broken={"example.co.uk", "_dmarc.example.co.uk"})
    recent = RecentResults()
    verdicts = await assess(inp(message()), 5, broken, recent)
    assert verdicts.spf == "temperror" and verdicts.dmarc == "temperror"
    fixed = FakeResolver(RECORDS)
    verdicts = await assess(inp(message()), 5, fixed, recent)
    assert verdicts.spf == "pass" and verdicts.dmarc == "pass"


def test_recent_results_expire_and_are_bounded() -> None:
    now = [0.0]
    recent: Recent[str, str] = Recent(ttl=30.0, size=2, clock=lambda: now[0])
    recent.put("a", "1")
    now[0] = 29.9
    assert recent.get("a") == "1"
    now[0] = 30.0
    assert recent.get("a") is None
    recent.put("a", "1")
    recent.put("b", "2")
    assert recent.get("a") == "1"  # now the most recently used
    recent.put("c", "3")
    assert recent.get("b") is None and recent.get("a") == "1" and recent.get("c") == "3"


async def test_a_signature_after_lf_only_lines_still_gets_dkimpy(threads: list[str]) -> None:
    # dkimpy splits lines at LF as well as CRLF: headers with bare LFs are still headers to it.
    fake, recent = FakeResolver(RECORDS), RecentResults()
    await assess(inp(message()), 5, fake, recent)
    bare = b"X-First: 1\n" + SIGNATURE.replace(b"\r\n", b"\n") + b"From: <a@example.co.uk>\n\nb\n"
    header = (await assess(inp(bare), 5, fake, recent)).header(OURS, CLIENT)
    assert "header.d=example.co.uk" in header
    assert threads == ["check_spf_dkim", "check_spf_dkim"]


async def test_the_body_is_not_scanned_for_signatures(threads: list[str]) -> None:
    fake, recent = FakeResolver(RECORDS), RecentResults()
    await assess(inp(message()), 5, fake, recent)
    quoted = message() + b"> " + SIGNATURE  # a forwarded signature quoted in the text
    header = (await assess(inp(quoted), 5, fake, recent)).header(OURS, CLIENT)
    assert "dkim=none" in header
    assert threads == ["check_spf_dkim"]  # the quoted text sent nothing to dkimpy


@pytest.mark.parametrize(
    ("raw", "end"),
    [
        (b"A: 1\r\n\r\nbody", 6),
        (b"A: 1\n\nbody", 5),
        (b"A: 1\r\nB: 2\n\r\nbody\n\n", 11),
        (b"A: 1\r\n", 6),  # no body: everything may be a header
        (b"A: 1\r\r\nB: 2\r\n\r\n", 13),  # a bare CR is no line end to dkimpy
    ],
)
def test_header_end_covers_everything_dkimpy_reads_as_headers(raw: bytes, end: int) -> None:
    import dkim

    assert authres._header_end(raw) == end
    try:
        headers, _body = dkim.rfc822_parse(raw)
    except dkim.MessageFormatError:
        return
    assert all(name + b":" in raw[:end] for name, _value in headers)
