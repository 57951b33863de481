"""The unauthenticated-mail policy against a running relay and the lab's NSD: forwarded messages
DKIM-signed by the author's domain and ARC-sealed by a forwarder (dkimpy), through addresses
whose ``unauthenticated_policy`` is tag, hold and reject; what the peer saw, what reached the
sink, what the spool holds, what the log says. And a ``co.uk``-style domain whose organisational
domain only the RFC 9989 tree walk gets right."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dkim
import pytest

from lab import zones
from lab.arc import arc_seal
from lab.lab import Lab
from smtpconn.dns.cache import CachingResolver
from smtpconn.dns.dmarc_tree import organizational_domain
from smtpconn.dns.resolvers import make_resolver
from smtpconn.message.headers import header_value
from smtpconn.message.tag import TAG_HEADER, parse_tag
from smtpconn.relay.queue import list_queue, open_spool, retry
from smtpconn.relay.spool import Envelope, Spool
from tests.integration.relay.conftest import (
    INBOUND_HASH,
    INBOUND_PASS,
    INBOUND_USER,
    SUBMIT_SECRET_ENV,
    RelayEnv,
    started_relay,
    write_profile,
)
from tests.integration.security.rawsmtp import RawSmtp

AUTHOR = "author@good.test"  # DMARC p=reject, strict alignment, DKIM sel2048 with key "main"
FORWARDER_RETURN_PATH = "srs0=x@forwarder.test"  # SPF passes, never aligned with good.test
POLICIES = ("tag", "hold", "reject")


def _key(lab: Lab) -> bytes:
    return Path(lab.dkim_keys["main"].path).read_bytes()


def authored(lab: Lab, token: str, author: str = AUTHOR) -> bytes:
    domain = author.rpartition("@")[2]
    body = (
        f"From: <{author}>\r\nTo: <list@forwarder.test>\r\nSubject: {token}\r\n"
        f"Message-ID: <{token}@{domain}>\r\n\r\nHello {token}\r\n"
    ).encode()
    if domain != zones.GOOD.name:
        return body
    signature = dkim.sign(
        body, b"sel2048", domain.encode(), _key(lab), include_headers=[b"from", b"subject"]
    )
    return signature + body


def forwarded(message: bytes) -> bytes:
    """What a mailing list does: a footer, which breaks the author's DKIM body hash."""
    return message + b"-- \r\nYou are subscribed to list@forwarder.test\r\n"


def sealed(lab: Lab, message: bytes, sealer: str) -> bytes:
    """Forwarded by ``sealer``: its verdict on arrival (DKIM and DMARC passed) in an
    Authentication-Results, the footer, then an ARC set over the changed message."""
    seen = (
        b"Authentication-Results: mx.forwarder.test; dkim=pass header.d=good.test;"
        b" dmarc=pass header.from=good.test\r\n" + message
    )
    return arc_seal(forwarded(seen), zones.ARC_SELECTOR, sealer, _key(lab), "mx.forwarder.test")


async def send(port: int, rcpt: str, message: bytes, mail_from: str = FORWARDER_RETURN_PATH) -> str:
    """A forwarder's delivery, no AUTH: the final reply to DATA (or the first refusal)."""
    client = await RawSmtp.connect(port)
    try:
        assert (await client.cmd("EHLO mx.forwarder.test")).startswith("250")
        for line in (f"MAIL FROM:<{mail_from}>", f"RCPT TO:<{rcpt}>", "DATA"):
            reply = await client.cmd(line)
            if reply[:1] not in ("2", "3"):
                return reply
        await client.send(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        return await client.reply(timeout=30)
    finally:
        await client.close()


def policy_profile(env: RelayEnv, lab: Lab, trusted: list[str]) -> dict[str, str]:
    """Forwarding addresses tag@, hold@ and reject@ of the test's domain, all trusting
    ``trusted`` as ARC sealers."""
    assert lab.ca is not None
    addresses: list[dict[str, Any]] = [
        {
            "address": f"{policy}@{env.domain}",
            "mode": "outbound-only",
            "workflow": "forwarding",
            "unauthenticated_policy": policy,
            "trusted_arc_sealers": trusted,
        }
        for policy in POLICIES
    ]
    write_profile(env.profile, addresses, _relay_table(lab))
    return {policy: f"{policy}@{env.domain}" for policy in POLICIES}


async def at_sink(env: RelayEnv, token: str, timeout: float = 20.0) -> bytes:
    """The sink's copy of the message with ``token`` (polled without blocking the relay, which
    runs on this event loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for raw in env.sink_messages():
            if token.encode() in raw:
                return raw
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message with {token} reached the sink")


def tag_of(raw: bytes) -> dict[str, str]:
    value = header_value(raw, TAG_HEADER)
    assert value is not None
    return parse_tag(value)


async def wait_held(env: RelayEnv, token: str, timeout: float = 20.0) -> str:
    """The id of the held inbound message whose text has ``token``."""
    spool = open_spool(env.spool)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for item in list_queue(spool, "inbound"):
            if item.state.held and token.encode() in spool.message(item.entry):
                return item.entry.id
        await asyncio.sleep(0.1)
    raise AssertionError(f"no held message with {token}")


async def log_with(env: RelayEnv, *needles: str, timeout: float = 10.0) -> list[str]:
    """The log lines with all ``needles``, waiting for one (the sink has a message a moment
    before the relay logs it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [line for line in env.log_lines if all(n in line for n in needles)]
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


# (case, how the message is made, the auth= the relay must find)
CASES = {
    "dkim-pass": ("pass", lambda lab, m: m),
    "dkim-broken": ("fail", lambda lab, m: forwarded(m)),
    "arc-trusted": ("pass", lambda lab, m: sealed(lab, m, zones.ARC_SEALER)),
    "arc-untrusted": ("fail", lambda lab, m: sealed(lab, m, zones.ARC_OTHER_SEALER)),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_policy_on_forwarded_mail(lab: Lab, relay_env: RelayEnv, case: str) -> None:
    expected, make = CASES[case]
    targets = policy_profile(relay_env, lab, [zones.ARC_SEALER])
    async with started_relay(relay_env) as relay:
        replies: dict[str, str] = {}
        tokens: dict[str, str] = {}
        for policy, rcpt in targets.items():
            tokens[policy] = f"{case}-{policy}-{uuid.uuid4().hex[:8]}"
            message = make(lab, authored(lab, tokens[policy]))
            replies[policy] = await send(relay.inbound_port, rcpt, message)

        # tag: always delivered, the verdict in the tag and in Authentication-Results.
        assert replies["tag"].startswith("250"), replies["tag"]
        raw = await at_sink(relay_env, tokens["tag"])
        assert tag_of(raw) == {"tag": "unauthenticated", "mode": "outbound-only", "auth": expected}
        authres = header_value(raw, "Authentication-Results") or ""
        assert authres.startswith("relay.helpdesk.test;")
        if case.startswith("arc"):
            assert "arc=pass" in authres
            assert "dmarc=fail" in authres  # our own DMARC; the trusted sealer's word decides
        assert await log_with(relay_env, "inbound.delivered", f"auth={expected}")

        if expected == "pass":
            for policy in ("hold", "reject"):
                assert replies[policy].startswith("250"), replies[policy]
                assert tag_of(await at_sink(relay_env, tokens[policy]))["auth"] == "pass"
            return

        # reject: refused in the session, nothing spooled, never at the sink.
        assert replies["reject"].startswith("550 5.7.1 Unauthenticated mail refused: DMARC fail"), (
            replies["reject"]
        )
        if case == "arc-untrusted":
            assert zones.ARC_OTHER_SEALER in replies["reject"]
            assert "not trusted" in replies["reject"]
        assert await log_with(relay_env, "inbound.rejected", "auth=fail", targets["reject"])

        # hold: accepted (250), kept in the held state with the reason, released by retry.
        assert replies["hold"].startswith("250"), replies["hold"]
        held = await wait_held(relay_env, tokens["hold"])
        spool = open_spool(relay_env.spool)
        item = next(i for i in list_queue(spool, "inbound") if i.entry.id == held)
        assert item.to_json()["status"] == "held"
        assert "unauthenticated_policy=hold: DMARC fail for good.test" in str(item.state.last_error)
        assert await log_with(relay_env, "inbound.held", "reason=unauthenticated-policy", held)
        assert not any(tokens["hold"].encode() in m for m in relay_env.sink_messages())

        assert retry(spool, [held]) == [held]
        raw = await at_sink(relay_env, tokens["hold"])
        assert tag_of(raw)["auth"] == "fail"  # released as it is: still tagged a failure

        await asyncio.sleep(0.5)
        everything = b"".join(relay_env.sink_messages())
        assert tokens["reject"].encode() not in everything
        assert not list(open_spool(relay_env.spool).entries("inbound"))


async def test_authenticated_mail_is_never_held_or_rejected(lab: Lab, relay_env: RelayEnv) -> None:
    """The customer's server (logged in) relays a failing message to a reject-policy address
    that it is authorised for: the policy is for the forwarding path only."""
    assert lab.ca is not None
    data = {
        "address": f"support@{relay_env.domain}",
        "mode": "bidirectional",
        "outbound": {
            "host": lab.server_name,
            "port": lab.ports["submission"],
            "security": "starttls",
            "username": lab.user.username,
            "secret": f"env:{SUBMIT_SECRET_ENV}",
        },
        "inbound": {"username": INBOUND_USER, "password_hash": INBOUND_HASH},
        "unauthenticated_policy": "reject",
    }
    write_profile(relay_env.profile, [data], _relay_table(lab))
    token = f"auth-{uuid.uuid4().hex[:8]}"
    async with started_relay(relay_env) as relay:
        client = await RawSmtp.connect(relay.inbound_port)
        try:
            await client.greet(lab.ca_file, (INBOUND_USER, INBOUND_PASS))
            assert (await client.cmd(f"MAIL FROM:<{FORWARDER_RETURN_PATH}>")).startswith("250")
            assert (await client.cmd(f"RCPT TO:<{data['address']}>")).startswith("250")
            assert (await client.cmd("DATA")).startswith("354")
            await client.send(forwarded(authored(lab, token)) + b".\r\n")
            assert (await client.reply(timeout=30)).startswith("250")
        finally:
            await client.close()
        raw = await at_sink(relay_env, token)
    assert tag_of(raw) == {"tag": "authenticated", "mode": "bidirectional"}


def _relay_table(lab: Lab) -> dict[str, Any]:
    assert lab.ca is not None
    return {
        "inbound_listen": "127.0.0.1:0",
        "submission_listen": "127.0.0.1:0",
        "tls_cert": str(lab.ca.relay.cert),
        "tls_key": str(lab.ca.relay.key),
        "spool": "spool",
        "hostname": "relay.helpdesk.test",
        "retry_initial": 1,
        "sink": {"kind": "maildir", "path": "helpdesk"},
    }


async def test_a_recipient_under_another_policy_waits_for_its_own_transaction(
    lab: Lab, relay_env: RelayEnv
) -> None:
    targets = policy_profile(relay_env, lab, [])
    async with started_relay(relay_env) as relay:
        client = await RawSmtp.connect(relay.inbound_port)
        try:
            assert (await client.cmd("EHLO mx.forwarder.test")).startswith("250")
            assert (await client.cmd(f"MAIL FROM:<{FORWARDER_RETURN_PATH}>")).startswith("250")
            assert (await client.cmd(f"RCPT TO:<{targets['reject']}>")).startswith("250")
            reply = await client.cmd(f"RCPT TO:<{targets['tag']}>")
            assert reply.startswith("452 4.5.3"), reply
            assert (await client.cmd(f"RCPT TO:<{targets['reject']}>")).startswith("250")
        finally:
            await client.close()


async def test_public_suffix_style_domain_found_by_the_tree_walk(
    lab: Lab, relay_env: RelayEnv
) -> None:
    """From help.example.co.uk.test, SPF passing for another registrant under the same suffix:
    the last two labels (uk.test for both) call them aligned; the tree walk finds the
    organisational domains example.co.uk.test and attacker.co.uk.test and DMARC fails. The
    policy found is example.co.uk.test's (sp=reject), reached by the walk."""
    host, _, port = lab.resolver.rpartition(":")
    resolver = CachingResolver(make_resolver(((host, int(port)),), timeout=3.0))
    author_org = await organizational_domain(resolver, zones.PSD_SUBDOMAIN)
    other_org = await organizational_domain(resolver, zones.PSD_OTHER)
    assert (author_org, other_org) == (zones.PSD_ORG, zones.PSD_OTHER)
    last_two = [".".join(d.split(".")[-2:]) for d in (zones.PSD_SUBDOMAIN, zones.PSD_OTHER)]
    assert last_two == ["uk.test", "uk.test"]  # the old guess: "aligned", and asks _dmarc.uk.test

    targets = policy_profile(relay_env, lab, [])
    author = f"someone@{zones.PSD_SUBDOMAIN}"
    async with started_relay(relay_env) as relay:
        spoof = f"psd-spoof-{uuid.uuid4().hex[:8]}"
        reply = await send(
            relay.inbound_port,
            targets["reject"],
            authored(lab, spoof, author),
            mail_from=f"bounce@{zones.PSD_OTHER}",
        )
        assert reply.startswith("550 5.7.1"), reply
        assert f"DMARC fail for {zones.PSD_SUBDOMAIN}" in reply

        real = f"psd-real-{uuid.uuid4().hex[:8]}"
        reply = await send(
            relay.inbound_port,
            targets["tag"],
            authored(lab, real, author),
            mail_from=f"bounce@{zones.PSD_ORG}",
        )
        assert reply.startswith("250"), reply
        raw = await at_sink(relay_env, real)
    authres = header_value(raw, "Authentication-Results") or ""
    assert f"dmarc=pass (p=reject) header.from={zones.PSD_SUBDOMAIN}" in authres
    assert tag_of(raw)["auth"] == "pass"


# -- hostile: what a sender can do to the policy ----------------------------------------------

# i= spellings int() reads as a number and dkimpy's i\s*=\s*(\d+) does not (so it skips them).
FORGED_INSTANCES = {"plus": "+9", "arabic-digit": "\u0669"}


@pytest.mark.parametrize("form", list(FORGED_INSTANCES))
async def test_a_forged_trusted_arc_set_on_a_valid_chain_is_not_believed(
    lab: Lab, relay_env: RelayEnv, form: str
) -> None:
    """The attacker seals a spoofed message with its own key (a valid chain, cv=pass, sealer
    not trusted), then puts an unsigned "trusted" ARC-Seal and ARC-Authentication-Results on
    top with an i= only a lenient parser numbers. dkimpy skips them; so must the trust
    decision: DMARC fails, reject refuses, tag says auth=fail."""
    instance = FORGED_INSTANCES[form]
    targets = policy_profile(relay_env, lab, [zones.ARC_SEALER])
    forged = (
        f"ARC-Seal: i={instance}; a=rsa-sha256; cv=pass; d={zones.ARC_SEALER};"
        f" s={zones.ARC_SELECTOR}; b=AAAA\r\n"
        f"ARC-Authentication-Results: i={instance}; mx.{zones.ARC_SEALER}; dmarc=pass"
        f" header.from=good.test\r\n"
    ).encode()
    async with started_relay(relay_env) as relay:
        tokens = {p: f"forged-arc-{form}-{p}-{uuid.uuid4().hex[:8]}" for p in ("tag", "reject")}
        replies = {
            p: await send(
                relay.inbound_port,
                targets[p],
                forged + sealed(lab, authored(lab, tokens[p]), zones.ARC_OTHER_SEALER),
            )
            for p in tokens
        }
        assert replies["reject"].startswith("550 5.7.1 Unauthenticated mail refused: DMARC fail")
        assert f"sealer {zones.ARC_OTHER_SEALER} not trusted" in replies["reject"]
        assert replies["tag"].startswith("250"), replies["tag"]
        raw = await at_sink(relay_env, tokens["tag"])
    assert tag_of(raw)["auth"] == "fail"
    authres = header_value(raw, "Authentication-Results") or ""
    assert f"arc=pass (sealed by {zones.ARC_OTHER_SEALER})" in authres
    assert tokens["reject"].encode() not in b"".join(relay_env.sink_messages())


# The forwarder's own domain first (SPF aligned: DMARC would pass for it), the spoofed author
# second, where a reader that takes the last From (or every author) shows it.
AUTHORLESS = {
    "no-from": ("", "no From header"),
    "two-from-headers": ("From: <x@forwarder.test>\r\nFrom: <author@good.test>\r\n", "2 From"),
    "two-domains": ("From: <x@forwarder.test>, <author@good.test>\r\n", "in 2 domains"),
}


@pytest.mark.parametrize("shape", list(AUTHORLESS))
async def test_a_message_without_one_author_domain_is_judged_a_failure(
    lab: Lab, relay_env: RelayEnv, shape: str
) -> None:
    """Without exactly one From author domain DMARC has no policy to find: that must not read
    as "no policy" (auth=none, delivered) under hold or reject."""
    from_lines, why = AUTHORLESS[shape]
    targets = policy_profile(relay_env, lab, [])
    async with started_relay(relay_env) as relay:
        tokens = {p: f"authorless-{shape}-{p}-{uuid.uuid4().hex[:8]}" for p in POLICIES}
        replies = {
            p: await send(
                relay.inbound_port,
                targets[p],
                (
                    f"{from_lines}To: <list@forwarder.test>\r\nSubject: {tokens[p]}\r\n"
                    f"Message-ID: <{tokens[p]}@forwarder.test>\r\n\r\nHello {tokens[p]}\r\n"
                ).encode(),
            )
            for p in POLICIES
        }
        assert replies["reject"].startswith(
            "550 5.7.1 Unauthenticated mail refused: no single author domain"
        ), replies["reject"]
        assert why in replies["reject"]
        assert replies["hold"].startswith("250"), replies["hold"]
        held = await wait_held(relay_env, tokens["hold"])
        item = next(
            i for i in list_queue(open_spool(relay_env.spool), "inbound") if i.entry.id == held
        )
        assert "no single author domain" in str(item.state.last_error)
        assert replies["tag"].startswith("250"), replies["tag"]
        raw = await at_sink(relay_env, tokens["tag"])
        assert tag_of(raw)["auth"] == "fail"
        await asyncio.sleep(0.3)
    everything = b"".join(relay_env.sink_messages())
    assert tokens["hold"].encode() not in everything
    assert tokens["reject"].encode() not in everything


async def test_the_policy_is_decided_once_across_attempts(lab: Lab, relay_env: RelayEnv) -> None:
    """A hold address, a message a trusted sealer vouches for (auth=pass, delivered), a pipe
    sink that fails the first time. Before the retry the profile stops trusting the sealer: the
    retry delivers with the first judgement (its Authentication-Results and auth=pass), it
    does not judge again (a second judgement was a different tag, and skipped the hold)."""
    out = relay_env.root / "piped"
    out.mkdir()
    script = relay_env.root / "mailgate.py"
    script.write_text(
        f"#!{sys.executable}\nimport os, sys\nout = {str(out)!r}\nruns = len(os.listdir(out))\n"
        'open(os.path.join(out, f"run{runs}"), "wb").write(sys.stdin.buffer.read())\n'
        "sys.exit(75 if runs == 0 else 0)\n"
    )
    script.chmod(0o755)

    def profile(trusted: list[str]) -> None:
        address = {
            "address": f"hold@{relay_env.domain}",
            "mode": "outbound-only",
            "workflow": "forwarding",
            "unauthenticated_policy": "hold",
            "trusted_arc_sealers": trusted,
        }
        relay = {**_relay_table(lab), "retry_initial": 600}
        relay["sink"] = {"kind": "pipe", "command": [str(script)]}
        write_profile(relay_env.profile, [address], relay)

    profile([zones.ARC_SEALER])
    token = f"decided-once-{uuid.uuid4().hex[:8]}"
    async with started_relay(relay_env) as relay:
        message = sealed(lab, authored(lab, token), zones.ARC_SEALER)
        reply = await send(relay.inbound_port, f"hold@{relay_env.domain}", message)
        assert reply.startswith("250"), reply
        assert await log_with(relay_env, "inbound.deferred", timeout=20)
        profile([])  # the sealer is no longer trusted: a new judgement would say auth=fail
        assert await relay.reload()
        spool = open_spool(relay_env.spool)
        [item] = list_queue(spool, "inbound")
        assert retry(spool, [item.entry.id]) == [item.entry.id]
        assert await log_with(relay_env, "inbound.delivered", timeout=20)
    first, second = ((out / name).read_bytes() for name in ("run0", "run1"))
    assert tag_of(first)["auth"] == tag_of(second)["auth"] == "pass"
    assert header_value(first, "Authentication-Results") == header_value(
        second, "Authentication-Results"
    )
    assert not any("inbound.held" in line for line in relay_env.log_lines)


@pytest.mark.parametrize("tag", [None, "", "Authenticated", "authenticated ", "yes"])
async def test_a_spooled_entry_without_exactly_the_authenticated_tag_is_unauthenticated(
    lab: Lab, relay_env: RelayEnv, tag: str | None
) -> None:
    """Spool metadata the listener did not write (an older relay, an edited or damaged entry)
    never earns the authenticated tag: anything but exactly "authenticated" is judged and
    tagged unauthenticated (fail closed)."""
    spool = Spool(relay_env.spool)
    spool.create()
    meta: dict[str, Any] = {
        "mode": "outbound-only",
        "support_address": relay_env.addresses["outbound-only"],
        "client_ip": "127.0.0.1",
        "helo": "mx.forwarder.test",
        "tag_at_handover": True,
    }
    if tag is not None:
        meta["tag"] = tag
    token = f"odd-tag-{uuid.uuid4().hex[:8]}"
    envelope = Envelope(
        "inbound", FORWARDER_RETURN_PATH, (relay_env.addresses["outbound-only"],), time.time(), meta
    )
    spool.put(envelope, forwarded(authored(lab, token)))
    async with started_relay(relay_env):
        raw = await at_sink(relay_env, token)
    assert tag_of(raw) == {"tag": "unauthenticated", "mode": "outbound-only", "auth": "fail"}
