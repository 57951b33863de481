"""DKIM record parsing and key-match, the DMARC tree walk and policy, TXT splitting."""

from __future__ import annotations

import asyncio
import base64
import math
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtpconn.addresses import parse_address
from smtpconn.checks import dkim_checks
from smtpconn.checks.dkim_checks import (
    decode_public,
    fingerprint,
    load_local_key,
    run_dkim,
)
from smtpconn.checks.dmarc import check_policy, find_dmarc, with_tag, without_tag
from smtpconn.checks.model import Status
from smtpconn.checks.records import split_txt, txt_record
from smtpconn.dns.dmarc_tree import walk_names
from smtpconn.dns.tags import parse_tags
from smtpconn.profile.model import DkimSettings, Mode, SupportAddress, Workflow
from tests.unit.checks.fakedns import FakeResolver, context


def test_split_txt_strings_are_at_most_255_bytes_and_join_back() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 600
    parts = split_txt(text)
    assert all(len(p.encode()) <= 255 for p in parts) and "".join(parts) == text
    assert txt_record("x.example", "short") == 'x.example. TXT "short"'


def test_parse_tags_drops_folding_white_space() -> None:
    assert parse_tags("v=DKIM1; k=rsa;\tp=AB CD\n EF ;") == {
        "v": "DKIM1",
        "k": "rsa",
        "p": "ABCDEF",
    }


def test_decode_public_rejects_garbage_and_sizes_rsa() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert decode_public("rsa", base64.b64encode(der).decode()).bits == 1024
    with pytest.raises(ValueError, match="base64"):
        decode_public("rsa", "not base64!")
    with pytest.raises(ValueError):
        decode_public("rsa", base64.b64encode(b"nonsense").decode())
    with pytest.raises(ValueError, match="32"):
        decode_public("ed25519", base64.b64encode(b"short").decode())


def _write(tmp: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path = tmp / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _entry(domain: str, path: Path) -> SupportAddress:
    return SupportAddress(
        parse_address(f"support@{domain}"),
        Mode.OUTBOUND_ONLY,
        Workflow.FORWARDING,
        dkim=DkimSettings("s1", path),
    )


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_key_match_and_its_fix(tmp_path: Path, kind: str) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = _write(tmp_path, key)
    local = load_local_key(path)
    assert not local.problem and local.algorithm == kind
    name = "s1._domainkey.ex.test"
    good = FakeResolver({(name, "TXT"): [local.record]})
    results = {r.id: r for r in await run_dkim(context(good), _entry("ex.test", path))}
    assert [r.status for r in results.values()] == [Status.PASS] * 3, results

    wrong_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    wrong_dir = tmp_path / "wrong"
    wrong_dir.mkdir()
    wrong = load_local_key(_write(wrong_dir, wrong_key))
    bad = FakeResolver({(name, "TXT"): [wrong.record]})
    results = {r.id: r for r in await run_dkim(context(bad), _entry("ex.test", path))}
    match = results["dkim.key-match"]
    assert match.status is Status.FAIL
    assert txt_record(name, local.record) in match.fix


@pytest.mark.parametrize("broken", ["d", "dmp1", "dmq1", "iqmp"])
def test_an_inconsistent_rsa_key_is_unusable(tmp_path: Path, broken: str) -> None:
    # The key's numbers are checked for consistency by smtpconn (cryptography's own check is
    # skipped for its cost); the verdict and its words stay those of cryptography's check.
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    parts = {
        "p": good.p,
        "q": good.q,
        "d": good.d,
        "dmp1": good.dmp1,
        "dmq1": good.dmq1,
        "iqmp": good.iqmp,
    }
    parts[broken] += 2
    key = rsa.RSAPrivateNumbers(**parts, public_numbers=good.public_numbers).private_key(
        unsafe_skip_rsa_key_validation=True
    )
    path = _write(tmp_path, key)
    local = load_local_key(path)
    assert local.problem == f"{path} is not an unencrypted PEM private key (Invalid private key)"
    assert not local.record


def _rsa_key(tmp: Path) -> tuple[Path, str]:
    path = _write(tmp, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return path, load_local_key(path).record


async def test_key_mismatch_names_both_fingerprints(tmp_path: Path) -> None:
    path, record = _rsa_key(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_record = _rsa_key(other_dir)
    ed = load_local_key(_write(other_dir, ed25519.Ed25519PrivateKey.generate()))
    name = "s1._domainkey.ex.test"
    for published, algorithm in ((other_record, "rsa"), (ed.record, "ed25519")):
        fake = FakeResolver({(name, "TXT"): [published]})
        match = (await run_dkim(context(fake), _entry("ex.test", path)))[2]
        assert match.status is Status.FAIL and record in match.fix.replace('" "', "")
        public = decode_public(algorithm, parse_tags(published)["p"])
        own = load_local_key(path)
        assert f"published: {algorithm} {fingerprint(public.canonical)}" in match.detail
        assert f"dkim.pem: rsa {fingerprint(own.public)}" in match.detail
        assert fingerprint(public.canonical) != fingerprint(own.public)


async def test_a_bare_pkcs1_key_in_p_matches_its_private_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = _write(tmp_path, key)
    pkcs1 = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(pkcs1).decode()
    fake = FakeResolver({("s1._domainkey.ex.test", "TXT"): [record]})
    results = await run_dkim(context(fake), _entry("ex.test", path))
    assert [r.status for r in results] == [Status.PASS] * 3, results
    assert "a test signature verifies" in results[2].detail


async def test_one_signature_per_key_and_record_however_many_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, record = _rsa_key(tmp_path)
    domains = [f"d{i}.test" for i in range(20)]
    records = {(f"s1._domainkey.{d}", "TXT"): [record] for d in domains}
    # Same key, but a record whose tags dkimpy must honour: a separate proof, and a failing one.
    records[("s1._domainkey.other.test", "TXT")] = [record.replace("k=rsa;", "k=rsa; s=ftp;")]
    calls: list[str] = []
    real = dkim_checks._sign_and_verify

    def counted(*args: Any) -> str:
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(dkim_checks, "_sign_and_verify", counted)
    ctx = context(FakeResolver(records))
    runs = [run_dkim(ctx, _entry(d, path)) for d in [*domains, "other.test"]]
    results = await asyncio.gather(*runs)
    assert all(r[2].status is Status.PASS for r in results[:-1])
    assert len(calls) == 2 and set(calls) == {
        record,
        records[("s1._domainkey.other.test", "TXT")][0],
    }
    proof = results[-1][2]
    assert proof.status is Status.FAIL and "does not verify" in proof.summary
    assert "public keys equal" in proof.detail and proof.fix.endswith(
        txt_record("s1._domainkey.other.test", record)
    )


async def test_revoked_testing_and_missing_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    local = load_local_key(path)
    name = "s1._domainkey.ex.test"
    cases = {
        "v=DKIM1; p=": (Status.FAIL, "revoked"),
        local.record + "; t=y": (Status.WARN, "testing"),
    }
    for record, (status, word) in cases.items():
        fake = FakeResolver({(name, "TXT"): [record]})
        key = (await run_dkim(context(fake), _entry("ex.test", path)))[0]
        assert key.status is status and word in key.summary and key.fix
    missing = (await run_dkim(context(FakeResolver({})), _entry("ex.test", path)))[0]
    assert missing.status is Status.FAIL and txt_record(name, local.record) in missing.fix
    down = await run_dkim(context(FakeResolver({}, broken={name})), _entry("ex.test", path))
    assert down[0].status is Status.ERROR and down[1].status is Status.SKIP


def test_walk_names_caps_at_eight_labels_and_stops_above_the_tld() -> None:
    assert walk_names("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    long = ".".join("abcdefghij") + ".com"  # 11 labels
    names = walk_names(long)
    assert names[0] == long and len(names[1].split(".")) == 7
    assert len(names) <= 8 and names[-1] == "j.com"


def test_tag_editing_keeps_the_rest() -> None:
    record = "v=DMARC1; p=none; rua=mailto:d@ex.test"
    assert with_tag(record, "p", "quarantine") == "v=DMARC1; p=quarantine; rua=mailto:d@ex.test"
    assert with_tag("v=DMARC1; rua=mailto:x@y.z", "p", "quarantine").startswith(
        "v=DMARC1; p=quarantine"
    )
    assert without_tag(record + "; pct=50", "pct") == record


async def test_dmarc_org_fallback_uses_sp_and_errors_are_not_missing() -> None:
    fake = FakeResolver({("_dmarc.ex.test", "TXT"): ["v=DMARC1; p=reject; sp=none"]})
    found = await find_dmarc(context(fake), "help.ex.test")
    assert found.result.status is Status.PASS and found.inherited
    policy = check_policy(found)
    assert policy.status is Status.WARN and "sp=none" in policy.summary
    assert "_dmarc.ex.test." in policy.fix and "sp=quarantine" in policy.fix

    broken = FakeResolver({}, broken={"_dmarc.ex.test"})
    assert (await find_dmarc(context(broken), "ex.test")).result.status is Status.ERROR

    invalid = FakeResolver({("_dmarc.ex.test", "TXT"): ["v=DMARC1; p=block"]})
    result = (await find_dmarc(context(invalid), "ex.test")).result
    assert result.status is Status.FAIL and "p=quarantine" in result.fix


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("v=DMARC1 p=reject; rua=mailto:d@ex.test", "v=DMARC1; p=reject; rua=mailto:d@ex.test"),
        ("v=DMARC1;p=none;", "v=DMARC1; p=none"),
        ("v=DMARC1; p=reject; rua=mailto:a@b pct=50", "v=DMARC1; p=reject; rua=mailto:a@b; pct=50"),
    ],
)
def test_a_missing_semicolon_is_put_back(published: str, expected: str) -> None:
    from smtpconn.checks.dmarc import separated

    assert separated(published) == expected


def test_of_two_dmarc_records_the_strongest_is_kept() -> None:
    from smtpconn.checks.dmarc import _strongest

    assert _strongest(["v=DMARC1; p=none", "v=DMARC1; p=reject", "v=DMARC1; p=bogus"]) == (
        "v=DMARC1; p=reject"
    )


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return b"\x02" + _der_len(len(body)) + body


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _pkcs1_pem(n: int, e: int, d: int, p: int, q: int) -> bytes:
    """An RSA private key with exactly these numbers (no library would make a broken one)."""
    dp, dq = (d % (p - 1), d % (q - 1)) if p > 1 and q > 1 else (0, 0)
    qi = pow(q, -1, p) if p > 1 and math.gcd(q, p) == 1 else 0
    body = b"".join(_der_int(x) for x in (0, n, e, d, p, q, dp, dq, qi))
    der = b"\x30" + _der_len(len(body)) + body
    return (
        b"-----BEGIN RSA PRIVATE KEY-----\n"
        + base64.encodebytes(der)
        + b"-----END RSA PRIVATE KEY-----\n"
    )


def _broken_key(kind: str) -> bytes:
    good = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_numbers()
    p, q, n = good.p, good.q, good.public_numbers.n
    if kind == "p is 1":
        return _pkcs1_pem(n, 65537, 3, 1, n)
    if kind == "e is 1":
        return _pkcs1_pem(n, 1, 1, p, q)
    # A factor that is not prime, every other number derived from it correctly.
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_numbers()
    composite = other.p * other.q
    lam = math.lcm(composite - 1, q - 1)
    return _pkcs1_pem(composite * q, 65537, pow(65537, -1, lam), composite, q)


@pytest.mark.parametrize("kind", ["p is 1", "e is 1", "a factor is not prime"])
def test_a_broken_rsa_key_is_unusable_not_a_crash_or_advice_to_publish_it(
    tmp_path: Path, kind: str
) -> None:
    # Found by review once cryptography's own check was skipped: p = 1 raised
    # ZeroDivisionError (every dkim and dmarc check became `error`, exit 0), and keys with
    # e = 1 or a composite factor loaded, so dkim.key advised publishing their record.
    path = tmp_path / "broken.pem"
    path.write_bytes(_broken_key(kind))
    local = load_local_key(path)
    assert local.problem == f"{path} is not an unencrypted PEM private key (Invalid private key)"
    assert not local.record
