"""Hostile UTF-8 on the inbound listener (SMTPUTF8 is offered): a UTF-8 address without the
SMTPUTF8 parameter, bytes that are not UTF-8 (overlong forms, a lone continuation byte, an
encoded surrogate), Unicode controls, UTF-8 in parameters, and a non-UTF-8 header in an SMTPUTF8
message. Each is refused with the reply a client can act on; nothing reaches the spool or the
sink, and the log names the refusal without the raw bytes."""

from __future__ import annotations

import asyncio

import pytest

from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import RelayEnv

from .rawsmtp import RawSmtp


def _stored(env: RelayEnv) -> list[str]:
    return [p.name for p in (env.spool / "inbound").glob("*.msg")]


async def _session(port: int) -> RawSmtp:
    client = await RawSmtp.connect(port)
    ehlo = await client.cmd("EHLO attacker.example")
    assert "SMTPUTF8" in ehlo and ehlo.startswith("250")
    return client


MAIL_CASES = {
    # UTF-8 sender, valid, but no SMTPUTF8 parameter: RFC 6531 §3.4 says refuse.
    "utf8-without-param": (
        "MAIL FROM:<jösé@example.org>".encode(),
        "553 5.6.7",
        "smtputf8-required",
    ),
    # "/" as an overlong two-byte form (C0 AF): invalid UTF-8, a classic filter bypass.
    "overlong": (b"MAIL FROM:<a\xc0\xafb@example.org> SMTPUTF8", "553 5.6.7", "not-utf8"),
    "lone-continuation": (b"MAIL FROM:<a\x80b@example.org> SMTPUTF8", "553 5.6.7", "not-utf8"),
    "encoded-surrogate": (
        b"MAIL FROM:<a\xed\xa0\x80@example.org> SMTPUTF8",
        "553 5.6.7",
        "not-utf8",
    ),
    "truncated": (b"MAIL FROM:<a\xe2\x82@example.org> SMTPUTF8", "553 5.6.7", "not-utf8"),
    # Controls are still controls: C0, and the Unicode line ends (NEL U+0085, LS U+2028).
    "c0-control": (b"MAIL FROM:<a\rb@example.org> SMTPUTF8", "553 5.1.7", "control-character"),
    "nel": ("MAIL FROM:<a\u0085b@example.org> SMTPUTF8".encode(), "553 5.1.7", "control-character"),
    "line-separator": (
        "MAIL FROM:<a\u2028b@example.org> SMTPUTF8".encode(),
        "553 5.1.7",
        "control-character",
    ),
    "utf8-parameter": (
        "MAIL FROM:<a@example.org> SMTPUTF8 ENVID=ü".encode(),
        "501 5.5.4",
        "non-ascii-parameter",
    ),
}


@pytest.mark.parametrize("case", list(MAIL_CASES))
async def test_hostile_sender_is_refused(
    relay_env: RelayEnv, running_relay: Relay, case: str
) -> None:
    line, reply_start, reason = MAIL_CASES[case]
    client = await _session(running_relay.inbound_port)
    try:
        reply = await client.cmd(line + b"\r\n")
        assert reply.startswith(reply_start), reply
        # The session goes on: the refusal is an answer, not a lost connection.
        assert (await client.cmd("RSET")).startswith("250")
    finally:
        await client.close()
    log = relay_env.log_text()
    assert "event=session.command-refused" in log and f"reason={reason}" in log
    assert "\r" not in log and "\x80" not in log and "\u2028" not in log
    assert _stored(relay_env) == [] and relay_env.sink_messages() == []


async def test_utf8_recipient_needs_an_smtputf8_transaction(
    relay_env: RelayEnv, running_relay: Relay
) -> None:
    client = await _session(running_relay.inbound_port)
    try:
        assert (await client.cmd("MAIL FROM:<a@example.org>")).startswith("250")
        reply = await client.cmd("RCPT TO:<forward@bücher.example>".encode() + b"\r\n")
        assert reply.startswith("553 5.6.7"), reply
        reply = await client.cmd(b"RCPT TO:<forward@b\xc3\xbc\xffcher.example>\r\n")
        assert reply.startswith("553 5.6.7"), reply
    finally:
        await client.close()
    assert _stored(relay_env) == []


async def test_smtputf8_message_with_a_non_utf8_header_is_refused(
    relay_env: RelayEnv, running_relay: Relay
) -> None:
    rcpt = relay_env.addresses["outbound-only"]
    client = await _session(running_relay.inbound_port)
    try:
        assert (await client.cmd("MAIL FROM:<jösé@example.org> SMTPUTF8".encode() + b"\r\n"))[
            :3
        ] == "250"
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        await client.send(
            b"From: <a@example.org>\r\nSubject: caf\xe9 \xc0\xaf\r\n\r\nbody\r\n.\r\n"
        )
        reply = await client.reply()
        assert reply.startswith("550 5.6.7"), reply
    finally:
        await client.close()
    await asyncio.sleep(0.3)
    assert "reason=header-not-utf8" in relay_env.log_text()
    assert _stored(relay_env) == [] and relay_env.sink_messages() == []


async def test_an_ascii_session_is_unchanged(relay_env: RelayEnv, running_relay: Relay) -> None:
    """Without SMTPUTF8 an ordinary forwarded message is taken as before (8-bit body too)."""
    rcpt = relay_env.addresses["outbound-only"]
    client = await _session(running_relay.inbound_port)
    try:
        assert (await client.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")).startswith("250")
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        await client.send(b"From: <a@example.org>\r\nSubject: ascii\r\n\r\ncaf\xe9\r\n.\r\n")
        assert (await client.reply()).startswith("250")
    finally:
        await client.close()
