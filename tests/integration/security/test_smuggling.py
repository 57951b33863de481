"""SMTP smuggling: DATA ends only at CRLF.CRLF. A bare-newline end marker must neither end the
message nor start a second one on any path — least of all after AUTH, where a smuggled second
message would inherit the ``authenticated`` tag — and is never stored or passed on raw: by
default the message is refused with ``550 5.6.11``; with ``bare_newline = "normalize"`` it is
accepted with every bare CR/LF turned into CRLF, as one message."""

from __future__ import annotations

import uuid

import pytest

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import INBOUND_PASS, INBOUND_USER, RelayEnv, started_relay

from .listeners import (
    Path,
    envelope_for,
    has_bare_newline,
    open_session,
    rest_of_session,
    set_relay_keys,
    start_transaction,
)

MARKERS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"]


def _payload(marker: bytes, rcpt: str, token: str) -> bytes:
    """A message whose body hides a second transaction behind ``marker``."""
    first = (
        f"From: <someone@good.test>\r\nTo: <{rcpt}>\r\nSubject: {token}-first\r\n\r\nhello"
    ).encode()
    second = (
        f"MAIL FROM:<ceo@good.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        f"From: <ceo@good.test>\r\nSubject: {token}-smuggled\r\n"
        "X-Smtpconn-Tag: authenticated; mode=bidirectional\r\n\r\npay now"
    ).encode()
    return first + marker + second + b"\r\n.\r\n"


def _headers(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


async def _smuggle(lab: Lab, env: RelayEnv, relay: Relay, path: Path, marker: bytes) -> str:
    """Send one smuggling attempt; the reply to its DATA."""
    sender, rcpt = envelope_for(env, path)
    client = await open_session(lab, env, relay, path)
    try:
        await start_transaction(client, sender, rcpt)
        await client.send(_payload(marker, rcpt, uuid.uuid4().hex))
        reply = await client.reply()
        # One reply for one DATA: no MAIL/RCPT/DATA of the hidden message was answered.
        rest = await rest_of_session(client)
        assert len(rest) == 1 and rest[0].startswith("221"), (marker, rest)
    finally:
        await client.close()
    return reply


@pytest.mark.parametrize("path", [Path.FORWARDING, Path.AUTHENTICATED, Path.SUBMISSION])
async def test_bare_newline_end_markers_are_refused(
    lab: Lab, relay_env: RelayEnv, path: Path
) -> None:
    async with started_relay(relay_env) as relay:
        for marker in MARKERS:
            reply = await _smuggle(lab, relay_env, relay, path, marker)
            assert reply.startswith("550 5.6.11"), (marker, reply)
        await relay.wait_idle(10)
    assert relay_env.sink_messages() == []
    assert not [line for line in relay_env.log_lines if ".accepted" in line]
    assert sum("reason=bare-newline" in line for line in relay_env.log_lines) == len(MARKERS)


async def test_bare_newline_refused_on_implicit_tls(lab: Lab, relay_env: RelayEnv) -> None:
    import ssl

    from .rawsmtp import RawSmtp

    set_relay_keys(relay_env, inbound_tls_listen="127.0.0.1:0")
    async with started_relay(relay_env) as relay:
        assert relay.inbound_tls_port is not None
        tls = ssl.create_default_context(cafile=str(lab.ca_file))
        client = await RawSmtp.connect(relay.inbound_tls_port, tls=tls)
        try:
            await client.greet(login=(INBOUND_USER, INBOUND_PASS))
            sender, rcpt = envelope_for(relay_env, Path.AUTHENTICATED)
            await start_transaction(client, sender, rcpt)
            await client.send(_payload(b"\n.\n", rcpt, uuid.uuid4().hex))
            assert (await client.reply()).startswith("550 5.6.11")
        finally:
            await client.close()
    assert relay_env.sink_messages() == []


@pytest.mark.parametrize("path", [Path.FORWARDING, Path.AUTHENTICATED])
async def test_normalize_stores_one_message_with_crlf_only(
    lab: Lab, relay_env: RelayEnv, path: Path
) -> None:
    # A pipe sink receives the spooled bytes exactly (the Maildir sink writes LF line ends).
    out = relay_env.root / "piped"
    out.mkdir()
    command = ["/bin/sh", "-c", 'cat > "$1/$(date +%s%N).eml"', "sh", str(out)]
    set_relay_keys(relay_env, bare_newline="normalize", sink={"kind": "pipe", "command": command})
    async with started_relay(relay_env) as relay:
        for marker in MARKERS:
            reply = await _smuggle(lab, relay_env, relay, path, marker)
            assert reply.startswith("250 2.0.0"), (marker, reply)
        assert await relay.wait_idle(10)
    stored = [p.read_bytes() for p in sorted(out.iterdir())]
    assert len(stored) == len(MARKERS)  # one per attempt, none smuggled
    expected = "authenticated" if path is Path.AUTHENTICATED else "unauthenticated"
    for raw in stored:
        assert not has_bare_newline(raw), raw
        headers = _headers(raw)
        assert b"-first" in headers and b"-smuggled" not in headers
        assert headers.count(b"X-Smtpconn-Tag:") == 1
        assert f"X-Smtpconn-Tag: {expected};".encode() in headers
