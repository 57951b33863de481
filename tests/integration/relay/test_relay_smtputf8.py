"""SMTPUTF8 (RFC 6531) end to end: a UTF-8 sender and header through the inbound listener into
every sink kind as they were sent, a reply to a UTF-8 address through the lab Postfix (which
offers SMTPUTF8), and the clear outcomes when the next hop does not offer it: the smtp sink
holds the message, the customer's server without SMTPUTF8 becomes a DSN. Nothing is mangled."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import sys
import tomllib
import uuid
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from lab.lab import Lab
from lab.proc import free_ports
from smtpconn.relay.queue import list_queue
from tests.integration.security.rawsmtp import RawSmtp

from .conftest import RelayEnv, outbound_to, started_relay, write_profile

SENDER = "jösé@bücher.example"
CUSTOMER = "jösé.müller@good.test"  # the lab Postfix delivers it (catch-all of good.test)


def utf8_message(token: str, to: str) -> bytes:
    return (
        f"From: José Müller <{SENDER}>\r\nTo: <{to}>\r\nSubject: Grüße {token}\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\nSchöne Grüße, {token} ✓\r\n"
    ).encode()


async def send_utf8(port: int, rcpt: str, message: bytes, sender: str = SENDER) -> str:
    client = await RawSmtp.connect(port)
    try:
        ehlo = await client.cmd("EHLO mx.bücher.example")
        assert "SMTPUTF8" in ehlo, ehlo
        for line in (f"MAIL FROM:<{sender}> SMTPUTF8", f"RCPT TO:<{rcpt}>", "DATA"):
            reply = await client.cmd(line.encode("utf-8") + b"\r\n")
            assert reply[:1] in ("2", "3"), (line, reply)
        await client.send(message + b".\r\n")
        return await client.reply(timeout=30)
    finally:
        await client.close()


def _set_sink(env: RelayEnv, sink: dict[str, Any]) -> None:
    data = tomllib.loads(env.profile.read_text())
    data["relay"]["sink"] = sink
    write_profile(env.profile, data["addresses"], data["relay"])


async def _until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_utf8_sender_and_header_reach_the_maildir_as_sent(relay_env: RelayEnv) -> None:
    token = f"u8-{uuid.uuid4().hex[:8]}"
    rcpt = relay_env.addresses["outbound-only"]
    message = utf8_message(token, rcpt)
    async with started_relay(relay_env) as relay:
        reply = await send_utf8(relay.inbound_port, rcpt, message)
        assert reply.startswith("250"), reply
        await _until(lambda: relay_env.sink_messages(), "the sink")
        [raw] = relay_env.sink_messages()
    assert f"Return-Path: <{SENDER}>".encode() in raw
    assert message.replace(b"\r\n", b"\n") in raw  # header and body byte for byte
    assert f'mail_from="{SENDER}"' in relay_env.log_text()


class _Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.content, envelope.smtp_utf8)
        )
        return "250 OK delivered"


class _LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, enable_SMTPUTF8=True)


@pytest.mark.parametrize(("kind", "offers"), [("smtp", True), ("lmtp", True), ("smtp", False)])
async def test_forward_sinks_carry_smtputf8_or_hold(
    relay_env: RelayEnv, kind: str, offers: bool
) -> None:
    collector = _Collector()
    [port] = free_ports(1)
    if kind == "lmtp":
        controller: Controller = _LmtpController(collector, hostname="127.0.0.1", port=port)
    else:
        controller = Controller(collector, hostname="127.0.0.1", port=port, enable_SMTPUTF8=offers)
    controller.start()
    token = f"u8-{kind}-{uuid.uuid4().hex[:8]}"
    rcpt = relay_env.addresses["outbound-only"]
    try:
        _set_sink(relay_env, {"kind": kind, "host": "127.0.0.1", "port": port})
        async with started_relay(relay_env, poll=0.1) as relay:
            reply = await send_utf8(relay.inbound_port, rcpt, utf8_message(token, rcpt))
            assert reply.startswith("250"), reply
            if offers:
                assert await relay.wait_idle(10)
            else:
                await _until(lambda: "event=inbound.held" in relay_env.log_text(), "the hold")
                [item] = list_queue(relay.spool, "inbound")
                assert item.state.held
                assert "does not offer SMTPUTF8" in (item.state.last_error or "")
    finally:
        controller.stop()
    if not offers:
        assert collector.messages == []
        return
    [(mail_from, rcpts, content, smtputf8)] = collector.messages
    assert (mail_from, rcpts, smtputf8) == (SENDER, [rcpt], True)
    assert f"Subject: Grüße {token}".encode() in content


PIPE_SCRIPT = """
import os, sys
data = sys.stdin.buffer.read()
with open(sys.argv[1], "wb") as out:
    out.write(os.environb[b"SMTPCONN_MAIL_FROM"] + b"\\n" + os.environb[b"SMTPCONN_SMTPUTF8"]
              + b"\\n" + data)
"""


async def test_pipe_sink_gets_the_utf8_sender_and_message(relay_env: RelayEnv) -> None:
    script = relay_env.root / "capture.py"
    script.write_text(PIPE_SCRIPT)
    out = relay_env.root / "piped.eml"
    _set_sink(relay_env, {"kind": "pipe", "command": f"{sys.executable} {script} {out}"})
    token = f"u8-pipe-{uuid.uuid4().hex[:8]}"
    rcpt = relay_env.addresses["outbound-only"]
    async with started_relay(relay_env, poll=0.1) as relay:
        assert (await send_utf8(relay.inbound_port, rcpt, utf8_message(token, rcpt)))[:3] == "250"
        assert await relay.wait_idle(10)
    sender, flag, data = out.read_bytes().split(b"\n", 2)
    assert (sender.decode("utf-8"), flag) == (SENDER, b"1")
    assert f"Subject: Grüße {token}".encode() in data


async def test_webhook_sink_gets_the_utf8_sender_and_message(relay_env: RelayEnv) -> None:
    import http.server
    import threading

    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        _set_sink(relay_env, {"kind": "webhook", "url": url})
        token = f"u8-hook-{uuid.uuid4().hex[:8]}"
        rcpt = relay_env.addresses["outbound-only"]
        async with started_relay(relay_env, poll=0.1) as relay:
            assert (await send_utf8(relay.inbound_port, rcpt, utf8_message(token, rcpt)))[
                :3
            ] == "250"
            assert await relay.wait_idle(10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    [body] = received
    parsed = email.message_from_bytes(
        b"Content-Type: " + _content_type(body) + b"\r\n\r\n" + body, policy=email.policy.default
    )
    parts = list(parsed.iter_parts())  # type: ignore[attr-defined]
    metadata = json.loads(parts[0].get_payload(decode=True))
    assert metadata["mail_from"] == SENDER and metadata["smtputf8"] is True
    assert "authres" not in metadata and "tag_at_handover" not in metadata
    assert f"Subject: Grüße {token}".encode() in body


def _content_type(body: bytes) -> bytes:
    boundary = body.split(b"\r\n", 1)[0][2:]
    return b'multipart/form-data; boundary="' + boundary + b'"'


async def _submit_utf8(port: int, to: str, token: str) -> str:
    client = await RawSmtp.connect(port)
    try:
        assert "SMTPUTF8" in await client.cmd("EHLO helpdesk.example")
        for line in ("MAIL FROM:<support@good.test> SMTPUTF8", f"RCPT TO:<{to}>", "DATA"):
            reply = await client.cmd(line.encode("utf-8") + b"\r\n")
            assert reply[:1] in ("2", "3"), (line, reply)
        message = (
            f"From: Support <support@good.test>\r\nTo: José <{to}>\r\n"
            f"Subject: Antwort {token} für José\r\n\r\nHallo José!\r\n"
        ).encode()
        await client.send(message + b".\r\n")
        return await client.reply(timeout=30)
    finally:
        await client.close()


async def test_reply_to_a_utf8_address_through_the_customers_server(
    lab: Lab, relay_env: RelayEnv
) -> None:
    token = f"u8-out-{uuid.uuid4().hex[:8]}"
    async with started_relay(relay_env) as relay:
        assert (await _submit_utf8(relay.submission_port, CUSTOMER, token)).startswith("250")
        delivered = await asyncio.to_thread(lab.find_message, token)
        assert await relay.wait_idle(10)
    assert f"Subject: Antwort {token} für José".encode() in delivered.raw
    assert CUSTOMER.encode() in delivered.raw  # Postfix's Delivered-To / Received "for"
    assert "event=outbound.delivered" in relay_env.log_text()


async def test_customers_server_without_smtputf8_means_a_dsn(lab: Lab, relay_env: RelayEnv) -> None:
    data = tomllib.loads(relay_env.profile.read_text())
    for entry in data["addresses"]:
        if entry["address"] == "support@good.test":
            entry["outbound"] = outbound_to(lab, lab.ports["no_smtputf8"])
    write_profile(relay_env.profile, data["addresses"], data["relay"])
    token = f"u8-dsn-{uuid.uuid4().hex[:8]}"
    async with started_relay(relay_env) as relay:
        assert (await _submit_utf8(relay.submission_port, CUSTOMER, token)).startswith("250")
        await _until(lambda: any(token.encode() in m for m in relay_env.sink_messages()), "the DSN")
        assert await relay.wait_idle(10)
    [dsn_raw] = [m for m in relay_env.sink_messages() if token.encode() in m]
    report = dsn_raw.decode("utf-8", "replace")
    assert "Action: failed" in report and "Status: 5.6.7" in report
    assert "does not offer SMTPUTF8" in report
    assert r"Final-Recipient: utf-8; j\x{F6}s\x{E9}.m\x{FC}ller@good.test" in report  # RFC 6533
    assert "relay-dsn" in report
    log = relay_env.log_text()
    assert "event=outbound.bounced" in log and "status=5.6.7" in log
    assert not any(token.encode() in m.raw for m in lab.messages())  # never sent mangled


def _through_no_smtputf8(lab: Lab, env: RelayEnv) -> None:
    data = tomllib.loads(env.profile.read_text())
    for entry in data["addresses"]:
        if entry["address"] == "support@good.test":
            entry["outbound"] = outbound_to(lab, lab.ports["no_smtputf8"])
    write_profile(env.profile, data["addresses"], data["relay"])


async def _submit_raw_utf8_subject(port: int, token: str, *, declared: bool) -> str:
    """An ASCII-addressed reply whose Subject is raw UTF-8 (no RFC 2047), as some help desks
    write it; with or without SMTPUTF8 on MAIL FROM."""
    client = await RawSmtp.connect(port)
    try:
        await client.cmd("EHLO helpdesk.example")
        mail = "MAIL FROM:<support@good.test>" + (" SMTPUTF8" if declared else "")
        for line in (mail, "RCPT TO:<someone@good.test>", "DATA"):
            reply = await client.cmd(line)
            assert reply[:1] in ("2", "3"), (line, reply)
        message = (
            f"From: Support <support@good.test>\r\nTo: <someone@good.test>\r\n"
            f"Subject: Réponse {token}\r\n\r\nBonjour !\r\n"
        ).encode()
        await client.send(message + b".\r\n")
        return await client.reply(timeout=30)
    finally:
        await client.close()


async def test_raw_utf8_subject_to_an_ascii_address_goes_without_smtputf8(
    lab: Lab, relay_env: RelayEnv
) -> None:
    """Only an address or the submission's own SMTPUTF8 asks for SMTPUTF8: the content is not
    sniffed, so a server without it still takes such a reply, as it did before."""
    _through_no_smtputf8(lab, relay_env)
    token = f"u8-raw-{uuid.uuid4().hex[:8]}"
    async with started_relay(relay_env) as relay:
        reply = await _submit_raw_utf8_subject(relay.submission_port, token, declared=False)
        assert reply.startswith("250"), reply
        delivered = await asyncio.to_thread(lab.find_message, token)
        assert await relay.wait_idle(10)
    assert f"Subject: Réponse {token}".encode() in delivered.raw  # as written, not mangled
    log = relay_env.log_text()
    assert "event=outbound.delivered" in log and "event=outbound.bounced" not in log
    assert not any(token.encode() in m for m in relay_env.sink_messages())  # no DSN


async def test_declared_smtputf8_is_still_asked_of_the_customers_server(
    lab: Lab, relay_env: RelayEnv
) -> None:
    """The submission said SMTPUTF8 (kept in the spool's metadata): a server without it is a
    DSN, never the message sent without what it promised."""
    _through_no_smtputf8(lab, relay_env)
    token = f"u8-decl-{uuid.uuid4().hex[:8]}"
    async with started_relay(relay_env) as relay:
        reply = await _submit_raw_utf8_subject(relay.submission_port, token, declared=True)
        assert reply.startswith("250"), reply
        await _until(lambda: any(token.encode() in m for m in relay_env.sink_messages()), "the DSN")
        assert await relay.wait_idle(10)
    [dsn_raw] = [m for m in relay_env.sink_messages() if token.encode() in m]
    assert "does not offer SMTPUTF8" in dsn_raw.decode("utf-8", "replace")
    assert not any(token.encode() in m.raw for m in lab.messages())
