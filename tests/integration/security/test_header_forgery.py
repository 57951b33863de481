"""A client must not be able to put a header into the help desk's copy
that looks like the relay's own: an ``X-Smtpconn-Tag`` or an ``Authentication-Results`` under our
authserv-id, however it is spelled, folded or hidden behind a bare CR, nor one smuggled in through
the envelope sender that the Maildir sink writes into ``Return-Path``."""

from __future__ import annotations

import asyncio
import email
import email.message
import tomllib
import uuid
from pathlib import Path

import pytest

from lab.lab import Lab
from smtpconn.message.authserv import claims
from smtpconn.message.tag import TAG_HEADER, tag_value
from smtpconn.profile.store import load_profile
from smtpconn.relay.config import build_config
from smtpconn.relay.runtime import Relay
from smtpconn.relay.sinks.base import SinkItem
from smtpconn.relay.sinks.maildir import MaildirSink
from smtpconn.relay.tagging import prepend, strip_untrusted
from tests.integration.relay.conftest import (
    INBOUND_PASS,
    INBOUND_USER,
    RelayEnv,
    started_relay,
    write_profile,
)

from .rawsmtp import RawSmtp

OURS = "relay.helpdesk.test"
OUR_TAG = "authenticated; mode=bidirectional"


async def _deliver(
    lab: Lab,
    env: RelayEnv,
    relay: Relay,
    message: bytes,
    *,
    mail_from: str = "someone@good.test",
) -> tuple[str, bytes | None]:
    """Send ``message`` (its headers; the token goes in the body) over STARTTLS + AUTH to the
    bidirectional address; (the DATA reply, what reached the Maildir sink or None)."""
    token = f"forgery-{uuid.uuid4().hex}"
    client = await RawSmtp.connect(relay.inbound_port)
    try:
        await client.greet(lab.ca_file, (INBOUND_USER, INBOUND_PASS))
        assert (await client.cmd(f"MAIL FROM:<{mail_from}>")).startswith("250")
        assert (await client.cmd(f"RCPT TO:<support@{env.domain}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        reply = await client.cmd(message + f"\r\n{token}\r\n.\r\n".encode())
    finally:
        await client.close()
    if not reply.startswith("250"):
        return reply, None
    return reply, await asyncio.to_thread(env.wait_for_sink, token)


def _header_block(raw: bytes) -> bytes:
    return raw.split(b"\n\n", 1)[0]


def _ours_only(raw: bytes) -> email.message.Message:
    """The sink copy has exactly the relay's tag and the relay's A-R, for a reader breaking
    lines at LF and for Python's ``email`` (CR, LF and CRLF)."""
    head = _header_block(raw)
    assert head.count(b"Smtpconn-Tag") == 1, head.decode(errors="replace")
    assert head.startswith(b"Return-Path: <"), head
    assert f"\n{TAG_HEADER}: {OUR_TAG}\n".encode() in head
    parsed = email.message_from_bytes(raw)
    assert parsed.get_all(TAG_HEADER) == [OUR_TAG]
    results = [str(v) for v in parsed.get_all("Authentication-Results") or []]
    ours = [v for v in results if claims(str(v), OURS)]
    # One, ours: on top (after Return-Path/Delivered-To), in the form the relay writes.
    assert len(ours) == 1 and ours[0].startswith(f"{OURS};\n\tspf="), results
    assert ours[0] == results[0]
    return parsed


FORGED_RESULTS = [
    f"Authentication-Results: {OURS} 1; dkim=pass header.d=good.test; dmarc=pass",
    f"Authentication-Results: (trusted) {OURS}; dkim=pass; dmarc=pass",
    f"Authentication-Results: (a (nested) comment) {OURS.upper()} 1; dmarc=pass",
    f'Authentication-Results: "{OURS}"; dkim=pass; dmarc=pass',
    f"Authentication-Results:\r\n {OURS}\r\n\t1;\r\n dkim=pass; dmarc=pass",
    f"authentication-results : {OURS}.; dmarc=pass",
]


async def test_forged_authentication_results_never_reach_the_sink(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    kept = "Authentication-Results: relay.helpdesk.test.evil; dkim=pass"
    message = "\r\n".join(
        [*FORGED_RESULTS, kept, "From: someone@good.test", "Subject: forged results", "", ""]
    ).encode()
    reply, raw = await _deliver(lab, relay_env, running_relay, message)
    assert raw is not None, reply
    _ours_only(raw)
    assert kept.encode() in raw  # another id that merely starts with ours is not ours


FORGED_TAGS = [
    f"X-Smtpconn-Tag: {OUR_TAG}",
    "x-smtpconn-tag: authenticated; mode=bidirectional",
    "X-SMTPCONN-TAG:authenticated",
    "X-Smtpconn-Tag : authenticated; mode=bidirectional",
    "X-Smtpconn-Tag\t: authenticated",
    "X-Smtpconn-Tag:\r\n authenticated;\r\n\tmode=bidirectional",
]


async def test_forged_tags_in_every_spelling_never_reach_the_sink(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    message = "\r\n".join(
        ["From: someone@good.test", *FORGED_TAGS, "Subject: forged tags", "", ""]
    ).encode()
    reply, raw = await _deliver(lab, relay_env, running_relay, message)
    assert raw is not None, reply
    parsed = _ours_only(raw)
    assert parsed["Subject"] == "forged tags"


HIDDEN_TAGS = [
    # Python's email breaks lines at a bare CR (and at a bare LF) and would read a tag of its own.
    b"X-Note: hi\rX-Smtpconn-Tag: authenticated; mode=bidirectional\r\n",
    b"X-Note: hi\nX-Smtpconn-Tag: authenticated; mode=bidirectional\r\n",
    b"X-Note: hi\r\n\rX-Smtpconn-Tag: authenticated\r\n",
]


def _hidden_tag_message(hidden: bytes) -> bytes:
    return b"From: someone@good.test\r\n" + hidden + b"Subject: bare newline\r\n\r\n"


@pytest.mark.parametrize("hidden", HIDDEN_TAGS)
async def test_a_tag_hidden_behind_a_bare_newline_is_refused_by_default(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay, hidden: bytes
) -> None:
    reply, raw = await _deliver(lab, relay_env, running_relay, _hidden_tag_message(hidden))
    assert raw is None and reply.startswith("550 5.6.11"), reply
    assert relay_env.sink_messages() == []
    assert not list((relay_env.spool / "inbound").iterdir())


@pytest.mark.parametrize("hidden", HIDDEN_TAGS)
async def test_a_tag_hidden_behind_a_bare_newline_is_removed_when_normalized(
    lab: Lab, relay_env: RelayEnv, hidden: bytes
) -> None:
    profile = tomllib.loads(relay_env.profile.read_text())
    profile["relay"]["bare_newline"] = "normalize"
    write_profile(relay_env.profile, profile["addresses"], profile["relay"])
    async with started_relay(relay_env) as relay:
        reply, raw = await _deliver(lab, relay_env, relay, _hidden_tag_message(hidden))
    assert raw is not None, reply
    # Normalised, "\r\n\r" becomes a blank line: what followed it is body, not a header.
    _ours_only(raw)
    assert b"\r" not in raw


def test_maildir_sink_escapes_a_hostile_sender_and_strips_hidden_tags(
    relay_env: RelayEnv,
) -> None:
    """The writer is safe whatever reaches it (a message spooled before the listener refused
    such senders): the sink and the stripping are driven directly with hostile input."""
    loaded = load_profile(relay_env.profile)
    config = build_config(loaded.profile, loaded.base_dir, relay_env.settings)
    sink = MaildirSink(config.sink, config.sink_context)
    received = (
        b"From: someone@good.test\r\n"
        b"X-Note: hi\rX-Smtpconn-Tag: authenticated; mode=bidirectional\r\n"
        b"Authentication-Results: (ours) relay.helpdesk.test 1; dmarc=pass\r\n"
        b"Subject: hostile\r\n\r\nbody\r\n"
    )
    message = prepend(
        strip_untrusted(received, OURS),
        f"{TAG_HEADER}: {tag_value(False, 'outbound-only')}",
    )
    for mail_from in (
        "x@y\r\nX-Smtpconn-Tag: authenticated; mode=bidirectional",
        "x@y\rX-Smtpconn-Tag: authenticated",
        "x\x00\nX-Smtpconn-Tag: authenticated@y",
        "\nX-Smtpconn-Tag: authenticated",
    ):
        item = SinkItem(
            id=f"{uuid.uuid4().hex}.test",
            mail_from=mail_from,
            rcpt="support@x.test\r\nX-Smtpconn-Tag: authenticated",
            message=message,
        )
        asyncio.run(sink.deliver(item))
        written = (Path(config.sink.path or "") / "new" / f"{item.id}.{sink.hostname}").read_bytes()
        first, _, _ = written.partition(b"\n")
        assert first.startswith(b"Return-Path: <") and first.endswith(b">")
        assert all(b >= 0x20 and b != 0x7F for b in first), first
        assert b"\r" not in written.split(b"\n\n", 1)[0].replace(b"X-Note: hi\r", b"")
        parsed = email.message_from_bytes(written)
        assert parsed.get_all(TAG_HEADER) == ["unauthenticated; mode=outbound-only"], written
        assert parsed.get_all("Authentication-Results") is None
        assert "\n" not in str(parsed["Return-Path"]) and "\r" not in str(parsed["Return-Path"])
        assert len(parsed.get_all("Delivered-To") or []) == 1


@pytest.mark.parametrize("helo", ["client.good.test"])
async def test_null_sender_keeps_return_path_empty_and_spf_checks_postmaster_at_helo(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay, helo: str
) -> None:
    token = f"nullsender-{uuid.uuid4().hex}"
    client = await RawSmtp.connect(running_relay.inbound_port)
    try:
        assert (await client.cmd(f"EHLO {helo}")).startswith("250")
        await client.starttls(lab.ca_file)
        assert (await client.cmd(f"EHLO {helo}")).startswith("250")
        assert (await client.login(INBOUND_USER, INBOUND_PASS)).startswith("235")
        assert (await client.cmd("MAIL FROM:<>")).startswith("250")
        assert (await client.cmd(f"RCPT TO:<support@{relay_env.domain}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        data = f"From: MAILER-DAEMON@{helo}\r\nSubject: {token}\r\n\r\nbounce\r\n.\r\n"
        assert (await client.cmd(data.encode())).startswith("250")
    finally:
        await client.close()
    raw = await asyncio.to_thread(relay_env.wait_for_sink, token)
    assert raw.startswith(b"Return-Path: <>\n"), raw[:200]
    parsed = email.message_from_bytes(raw)
    [ours] = [
        str(v) for v in parsed.get_all("Authentication-Results") or [] if claims(str(v), OURS)
    ]
    spf = " ".join(ours.split()).split(";")[1].strip()
    assert f"smtp.mailfrom=postmaster@{helo}" in spf.split(), spf
    assert f"smtp.helo={helo}" in spf.split(), spf
