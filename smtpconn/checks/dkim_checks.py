"""The ``dkim`` family (RFC 6376, RFC 8463): ``dkim.key`` (the selector's key record is published
and parses), ``dkim.strength`` (RSA ≥ 2048 pass, 1024 warn, less fail; ed25519 pass) and
``dkim.key-match`` (a message signed with the profile's private key verifies against DNS).

key-match works in two steps, so that hundreds of addresses sharing one key cost one signature:

1. For every address, the public key derived from the profile's private key (``cryptography``) is
   compared with the decoded ``p=`` of the record ``dkim.key`` found. This is exact and cheap, and
   when the keys differ the result names both keys' SHA-256 fingerprints.
2. When they are equal, the end-to-end proof: dkimpy signs a message with the private key and
   verifies it against that published record (its tags included: ``h=``, ``s=``, ``k=``). It runs
   once per distinct (private key, published record) pair per run (``ctx.once``), in a worker
   thread: the signature math does not depend on the domain once the keys are equal, and dkimpy's
   RSA is pure Python under the GIL, so 300 addresses signing one by one took seconds.

ed25519 keys stop after step 1 (dkimpy needs PyNaCl to sign with them, which is not a dependency).
The record dkimpy verifies against is the one ``dkim.key`` fetched through the run's resolver, so
no lookup happens outside ``--resolver`` and a name holding other TXT records besides the key
cannot mislead it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smtpconn.checks import catalogue
from smtpconn.checks.common import could_not_tell, skipped
from smtpconn.checks.model import CheckContext, CheckResult, Status
from smtpconn.checks.records import txt_record
from smtpconn.dns import DnsAnswer, DnsOutcome
from smtpconn.dns.tags import parse_tags
from smtpconn.profile.model import SupportAddress

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateNumbers

IDS = catalogue.DKIM

NO_DKIM_FIX = (
    "if the connector should sign, re-add the address with a key: smtpconn add-address ADDRESS "
    "--readd --dkim-selector SELECTOR --dkim-key KEY.pem (and publish the record verify prints)"
)


@dataclass(frozen=True)
class PublicKey:
    algorithm: str  # rsa | ed25519
    bits: int
    der: bytes  # what p= carries (SubjectPublicKeyInfo for RSA, raw 32 bytes for ed25519)
    # SubjectPublicKeyInfo for RSA even when p= is a bare RSAPublicKey; raw 32 bytes for ed25519.
    canonical: bytes = b""


def fingerprint(canonical: bytes) -> str:
    """OpenSSH-style: ``SHA256:`` and the unpadded base64 digest of the canonical public key."""
    digest = base64.b64encode(hashlib.sha256(canonical).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def decode_public(algorithm: str, p: str) -> PublicKey:
    """Raises ValueError when ``p=`` is not a key of ``algorithm``."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_der_public_key,
    )

    try:
        data = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not valid base64") from None
    if algorithm == "ed25519":
        if len(data) != 32:
            raise ValueError(f"p= is {len(data)} bytes; an ed25519 key is 32")
        return PublicKey("ed25519", 256, data, data)
    try:
        key: object = load_der_public_key(data)
    except ValueError:
        # RFC 6376 §3.6.1 names SubjectPublicKeyInfo, but some generators publish a bare
        # RSAPublicKey; receivers such as dkimpy accept both, so do we.
        try:
            key = _load_pkcs1(data)
        except ValueError:
            raise ValueError("p= is not a DER-encoded RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"p= holds a {type(key).__name__}, not an RSA key")
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return PublicKey("rsa", key.key_size, data, spki)


def _load_pkcs1(data: bytes) -> object:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pem = (
        b"-----BEGIN RSA PUBLIC KEY-----\n"
        + base64.encodebytes(data)
        + b"-----END RSA PUBLIC KEY-----\n"
    )
    return load_pem_public_key(pem)


@dataclass(frozen=True)
class LocalKey:
    """The profile's private key, loaded; or why it could not be."""

    path: Path
    pem: bytes = b""
    algorithm: str = ""
    record: str = ""  # the key record to publish for it
    dkimpy_key: bytes = b""  # what dkimpy's sign() takes
    public: bytes = b""  # canonical public half, comparable with PublicKey.canonical
    problem: str = ""


def _consistent(numbers: RSAPrivateNumbers) -> bool:
    """The RSA numbers make a usable key, as OpenSSL's RSA_check_key would say, at a sixth of its
    cost: cryptography's own check (many primality rounds) took ~36 ms of CPU with the GIL held
    and stopped every other thread of a verify run, the TLS/AUTH session's included. An odd
    public exponent above 1, factors above 1 that pass one strong-probable-prime round each
    (a corrupt or hand-made factor fails it; only a contrived strong pseudoprime passes), and
    the private numbers derived from them."""
    p, q, d = numbers.p, numbers.q, numbers.d
    public = numbers.public_numbers
    if public.e < 3 or public.e % 2 == 0 or p < 3 or q < 3:
        return False
    return (
        p * q == public.n
        and _probably_prime(p)
        and _probably_prime(q)
        and public.e * d % math.lcm(p - 1, q - 1) == 1
        and numbers.dmp1 == d % (p - 1)
        and numbers.dmq1 == d % (q - 1)
        and numbers.iqmp * q % p == 1
    )


def _probably_prime(n: int) -> bool:
    """One Miller-Rabin round to base 2 (a strong probable prime); ~3 ms for a 1,024-bit n."""
    if n % 2 == 0:
        return n == 2
    odd, halvings = n - 1, 0
    while odd % 2 == 0:
        odd //= 2
        halvings += 1
    x = pow(2, odd, n)
    if x in (1, n - 1):
        return True
    for _ in range(halvings - 1):
        x = x * x % n
        if x == n - 1:
            return True
    return False


def load_local_key(path: Path) -> LocalKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        pem = path.read_bytes()
    except OSError as exc:
        return LocalKey(path, problem=f"cannot read {path}: {exc.strerror or exc}")
    try:
        key = serialization.load_pem_private_key(
            pem, password=None, unsafe_skip_rsa_key_validation=True
        )
        if isinstance(key, rsa.RSAPrivateKey) and not _consistent(key.private_numbers()):
            raise ValueError("Invalid private key")  # cryptography's own words for it
    except (ValueError, TypeError, ArithmeticError) as exc:
        return LocalKey(path, problem=f"{path} is not an unencrypted PEM private key ({exc})")
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")
        return LocalKey(path, pem, "rsa", record, pem, der)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw_public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        raw_private = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw_public).decode("ascii")
        return LocalKey(path, pem, "ed25519", record, base64.b64encode(raw_private), raw_public)
    return LocalKey(path, problem=f"{path} holds a {type(key).__name__}; DKIM needs RSA or ed25519")


@dataclass
class Published:
    name: str
    record: str | None = None
    key: PublicKey | None = None
    testing: bool = False
    result: CheckResult = field(default_factory=lambda: CheckResult("dkim.key", Status.PASS, ""))


GENERATE = "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim-{selector}.pem"


def _publish_fix(name: str, local: LocalKey | None, selector: str) -> str:
    if local is not None and not local.problem:
        return f"publish: {txt_record(name, local.record)}"
    return (
        f"generate a key ({GENERATE.format(selector=selector)}), set it as dkim.private_key in the "
        f"profile, run verify again and publish the TXT record at {name} it prints"
    )


async def _local(ctx: CheckContext, entry: SupportAddress) -> LocalKey | None:
    if entry.dkim is None or entry.dkim.private_key is None:
        return None
    path = entry.dkim.private_key
    if not path.is_absolute():
        path = ctx.base_dir / path
    return await ctx.once(
        ("dkim-local", str(path)), lambda: asyncio.to_thread(load_local_key, path)
    )


async def check_key(ctx: CheckContext, entry: SupportAddress, local: LocalKey | None) -> Published:
    assert entry.dkim is not None
    selector, domain = entry.dkim.selector, entry.address.domain
    name = f"{selector}._domainkey.{domain}"
    answer = await ctx.resolver.query(name, "TXT")
    fix = _server_fix(name) if entry.dkim.server_signs else _publish_fix(name, local, selector)
    return classify_key(answer, name, fix)


def _server_fix(name: str) -> str:
    """Where the key comes from when the customer's server signs: the server, not smtpconn."""
    return (
        f"publish at {name} the record your mail server gives for this selector (Microsoft 365: "
        "enable DKIM for the domain in the Defender portal and publish the selector1/selector2 "
        "CNAMEs it shows; Google Workspace: Admin console > Gmail > Authenticate email, "
        "generate a 2048-bit key; Postfix with OpenDKIM: the .txt file opendkim-genkey wrote)"
    )


def classify_key(answer: DnsAnswer, name: str, fix: str) -> Published:
    """What the TXT answer at ``name`` (``<selector>._domainkey.<domain>``) publishes; ``fix`` is
    what to publish there when it holds no usable key."""
    found = Published(name)
    if answer.outcome is DnsOutcome.ERROR:
        found.result = could_not_tell("dkim.key", f"TXT of {name}", [answer.error])
        return found
    if answer.void:
        found.result = CheckResult(
            "dkim.key",
            Status.FAIL,
            f"no DKIM key published at {name}",
            detail=f"TXT {answer.outcome.value}",
            fix=fix,
        )
        return found
    candidates = [r for r in answer.records if "p=" in r]
    if len(candidates) != 1:
        found.result = CheckResult(
            "dkim.key",
            Status.FAIL,
            f"{name} holds {len(candidates) or 'no'} DKIM key records; exactly one is needed",
            detail=" | ".join(answer.records),
            fix=("remove the other records and keep one: " if candidates else "") + fix,
        )
        return found
    found.record = candidates[0]
    _judge_record(found, found.record, fix)
    return found


def _judge_record(found: Published, record: str, fix: str) -> None:
    """Fill in ``found`` (key, testing, result) from its one key record."""
    name = found.name
    tags = parse_tags(record)
    algorithm = tags.get("k", "rsa").lower()
    problem = _tag_problem(tags, algorithm)
    if not problem and tags.get("p", "") == "":
        found.result = CheckResult(
            "dkim.key", Status.FAIL, f"the key at {name} is revoked (empty p=)", record, fix
        )
        return
    if not problem:
        try:
            found.key = decode_public(algorithm, tags["p"])
        except ValueError as exc:
            problem = str(exc)
    if problem or found.key is None:
        found.result = CheckResult(
            "dkim.key",
            Status.FAIL,
            f"the DKIM record at {name} does not parse: {problem}",
            detail=record,
            fix=fix,
        )
        return
    summary = f"{name}: {found.key.algorithm} key published"
    flags = tags.get("t", "").split(":")
    if "y" in flags:
        found.testing = True
        found.result = _testing_mode(name, record, flags, summary)
        return
    found.result = CheckResult("dkim.key", Status.PASS, summary, detail=record)


def _tag_problem(tags: dict[str, str], algorithm: str) -> str:
    if "v" in tags and tags["v"] != "DKIM1":
        return f"v={tags['v']} (must be DKIM1, and first)"
    if algorithm not in ("rsa", "ed25519"):
        return f"k={algorithm} is not a DKIM key type (rsa or ed25519)"
    return ""


def _testing_mode(name: str, record: str, flags: list[str], summary: str) -> CheckResult:
    """t=y: the warning, and the record to publish without it (other flags kept)."""
    kept = ":".join(f for f in flags if f and f != "y")
    parts = [p.strip() for p in record.split(";") if p.strip()]
    without = [p for p in parts if not p.lower().startswith("t=")]
    if kept:
        without.insert(1, f"t={kept}")
    return CheckResult(
        "dkim.key",
        Status.WARN,
        f"{summary}, but in testing mode (t=y): receivers may ignore its signatures",
        detail=record,
        fix=f"once signing works, publish without t=y: {txt_record(name, '; '.join(without))}",
    )


def check_strength(found: Published, selector: str, name: str) -> CheckResult:
    key = found.key
    if key is None:
        return skipped("dkim.strength", "dkim.key found no usable key", "fix dkim.key first")
    if key.algorithm == "ed25519":
        return CheckResult("dkim.strength", Status.PASS, "ed25519 key (RFC 8463)")
    fix = (
        f"generate a 2048-bit key ({GENERATE.format(selector=selector + 'new')}), publish its "
        f"record under a new selector ({selector}new._domainkey.{name.split('._domainkey.', 1)[1]}), "
        "switch dkim.selector and dkim.private_key in the profile, then remove the old record"
    )
    if key.bits < 1024:
        return CheckResult(
            "dkim.strength",
            Status.FAIL,
            f"RSA key of {key.bits} bits: receivers reject keys under 1024 bits (RFC 8301)",
            fix=fix,
        )
    if key.bits < 2048:
        return CheckResult(
            "dkim.strength",
            Status.WARN,
            f"RSA key of {key.bits} bits: 2048 is the recommended minimum",
            fix=fix,
        )
    return CheckResult("dkim.strength", Status.PASS, f"RSA key of {key.bits} bits")


def _sign_and_verify(local: LocalKey, record: str, selector: str, domain: str) -> str:
    """dkimpy signs with ``local`` and verifies against ``record``; returns why it failed, or
    "" when the signature verifies."""
    import dkim

    message = (
        f"From: <support@{domain}>\r\nTo: <support@{domain}>\r\n"
        f"Subject: smtpconn DKIM key check\r\nMessage-ID: <dkim-check@{domain}>\r\n\r\n"
        "This message is never sent.\r\n"
    ).encode("ascii")

    def published(_name: bytes, timeout: float = 5) -> bytes:
        return record.encode("utf-8")

    try:
        signature = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            local.dkimpy_key,
            include_headers=[b"from", b"to", b"subject", b"message-id"],
            signature_algorithm=b"rsa-sha256",
        )
        # Strength is judged by dkim.strength: accept any size here so that only the match counts.
        ok = dkim.verify(signature + message, dnsfunc=published, minkey=1)
    except dkim.DKIMException as exc:
        return f"dkimpy: {exc}"
    return "" if ok else "dkimpy: the signature does not verify with the published record"


async def _end_to_end(
    ctx: CheckContext, local: LocalKey, record: str, selector: str, domain: str
) -> str:
    key = ("dkim-sign-verify", hashlib.sha256(local.pem).digest(), record)
    return await ctx.once(
        key, lambda: asyncio.to_thread(_sign_and_verify, local, record, selector, domain)
    )


async def check_match(
    ctx: CheckContext, entry: SupportAddress, local: LocalKey | None, found: Published
) -> CheckResult:
    assert entry.dkim is not None
    if found.key is None or found.record is None:
        return skipped("dkim.key-match", "dkim.key found no usable key", "fix dkim.key first")
    assert local is not None
    if local.problem:
        return CheckResult(
            "dkim.key-match",
            Status.FAIL,
            f"the profile's DKIM private key is unusable: {local.problem}",
            fix="set dkim.private_key in the profile to the PEM file of the key published at "
            f"{found.name} (unencrypted PKCS#8 or PKCS#1)",
        )
    published = found.key
    if local.algorithm != published.algorithm or local.public != published.canonical:
        how = (
            f"published: {published.algorithm} {fingerprint(published.canonical)}; "
            f"{local.path.name}: {local.algorithm} {fingerprint(local.public)}"
        )
        return _match_result(False, how, local, found)
    same = f"public keys equal ({fingerprint(local.public)})"
    if local.algorithm == "ed25519":
        return _match_result(True, same, local, found)
    problem = await _end_to_end(ctx, local, found.record, entry.dkim.selector, entry.address.domain)
    if problem:
        return CheckResult(
            "dkim.key-match",
            Status.FAIL,
            f"{local.path.name} matches the key at {found.name}, but a message signed with it "
            "does not verify against the published record",
            detail=f"{same}; {problem}; record: {found.record}",
            fix=f"publish exactly: {txt_record(found.name, local.record)}",
        )
    return _match_result(True, f"{same}; a test signature verifies", local, found)


def _match_result(ok: bool, how: str, local: LocalKey, found: Published) -> CheckResult:
    if ok:
        return CheckResult(
            "dkim.key-match",
            Status.PASS,
            f"{local.path.name} matches the key published at {found.name}",
            detail=how,
        )
    return CheckResult(
        "dkim.key-match",
        Status.FAIL,
        f"the key published at {found.name} does not match {local.path.name}",
        detail=how,
        fix=f"publish the public half of {local.path.name}: {txt_record(found.name, local.record)} "
        "(or set dkim.private_key to the key whose public half is published)",
    )


async def run_dkim(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    """The family's results for ``entry``; computed once per run (dmarc.alignment reads them)."""
    return await ctx.once(("dkim-family", entry.address.key), lambda: _run_dkim(ctx, entry))


async def _run_dkim(ctx: CheckContext, entry: SupportAddress) -> list[CheckResult]:
    if entry.dkim is None:
        reason = "the profile names no DKIM selector for this address"
        return [skipped(i, reason, NO_DKIM_FIX) for i in IDS]
    local = await _local(ctx, entry)
    found = await check_key(ctx, entry, local)
    strength = check_strength(found, entry.dkim.selector, found.name)
    if entry.dkim.server_signs:
        match = skipped(
            "dkim.key-match",
            f"your server signs with selector {entry.dkim.selector}: the profile holds no "
            "private key to compare",
            "nothing to do here; send-test --direction roundtrip verifies your server's signature",
        )
        return [found.result, strength, match]
    match = await check_match(ctx, entry, local, found)
    return [found.result, strength, match]
