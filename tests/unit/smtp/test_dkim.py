"""The one DKIM signer: send-test's messages and the relay's replies carry the same signature."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtpconn.addresses import parse_address
from smtpconn.errors import UsageError
from smtpconn.profile.model import DkimSettings, Mode, SupportAddress, Workflow
from smtpconn.profile.wire import load_dkim_key, sign_for
from smtpconn.sendtest.testmessage import build_test_message

REPLY = (
    b"From: support@example.test\r\nTo: bob@example.org\r\nSubject: Re: ticket 42\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <r1@example.test>\r\n"
    b"In-Reply-To: <q1@example.org>\r\n\r\nHello.\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def entry(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> SupportAddress:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    return SupportAddress(
        parse_address("support@example.test"),
        Mode.BIDIRECTIONAL,
        Workflow.AUTHENTICATED,
        dkim=DkimSettings("sel1", Path("dkim.pem")),  # relative: to the profile's directory
    )


def _dnsfunc(key: rsa.RSAPrivateKey):  # type: ignore[no-untyped-def]
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name.rstrip(b".") == b"sel1._domainkey.example.test" else None

    return lookup


def _signed_headers(raw: bytes) -> str:
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", raw).decode()
    match = re.search(r"^DKIM-Signature:.*?\bh=([^;]+);", unfolded, re.M)
    assert match, raw
    return re.sub(r"\s+", "", match.group(1))


def test_relay_reply_and_test_message_are_signed_alike_and_verify(
    tmp_path: Path, entry: SupportAddress, rsa_key: rsa.RSAPrivateKey
) -> None:
    reply = sign_for(REPLY, entry, tmp_path)
    test = build_test_message(
        sender=entry.address,
        recipient=parse_address("bob@example.org"),
        direction="outbound",
        dkim=load_dkim_key(entry, tmp_path),
    )
    assert test.dkim_signed
    lookup = _dnsfunc(rsa_key)
    assert dkim.verify(reply, dnsfunc=lookup)
    assert dkim.verify(test.raw, dnsfunc=lookup)
    for raw in (reply, test.raw):
        assert b"c=relaxed/relaxed" in raw and b"a=rsa-sha256" in raw and b"d=example.test" in raw
    # One header list for both: what send-test proves is what replies carry.
    assert _signed_headers(reply) == _signed_headers(test.raw)
    assert "in-reply-to" in _signed_headers(reply) and "x-smtpconn-test" in _signed_headers(reply)


def test_tampered_reply_fails_verification(
    tmp_path: Path, entry: SupportAddress, rsa_key: rsa.RSAPrivateKey
) -> None:
    reply = sign_for(REPLY, entry, tmp_path).replace(b"ticket 42", b"ticket 43")
    assert not dkim.verify(reply, dnsfunc=_dnsfunc(rsa_key))


def test_no_key_leaves_the_message_unchanged(tmp_path: Path) -> None:
    plain = SupportAddress(
        parse_address("support@example.test"), Mode.OUTBOUND_ONLY, Workflow.AUTHENTICATED
    )
    assert load_dkim_key(plain, tmp_path) is None
    assert sign_for(REPLY, plain, tmp_path) == REPLY


def test_unreadable_or_broken_key_is_a_usage_error(tmp_path: Path, entry: SupportAddress) -> None:
    with pytest.raises(UsageError, match="cannot read the DKIM private key"):
        load_dkim_key(entry, tmp_path / "elsewhere")
    (tmp_path / "dkim.pem").write_text("not a key\n")
    with pytest.raises(UsageError, match="cannot DKIM-sign"):
        sign_for(REPLY, entry, tmp_path)


def test_key_repr_hides_the_private_key(tmp_path: Path, entry: SupportAddress) -> None:
    key = load_dkim_key(entry, tmp_path)
    assert key is not None
    assert "PRIVATE" not in repr(key) and "sel1" in repr(key)
