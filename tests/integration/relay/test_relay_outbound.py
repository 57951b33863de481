"""Outbound: the help desk's replies go out through the customer's server (the lab Postfix)
with TLS + AUTH; unknown senders are refused; failures wait in the spool or come back as DSNs."""

from __future__ import annotations

import asyncio
import uuid
from email.message import EmailMessage

import aiosmtplib
import pytest

from lab.lab import Lab
from lab.proc import free_ports
from lab.sink import SmtpSink
from smtpconn.relay.queue import list_queue
from smtpconn.relay.runtime import Relay

from .conftest import RelayEnv, outbound_to, write_profile


def reply(sender: str, to: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Thanks for your message; here is our answer.\n")
    return message


async def submit(port: int, sender: str, to: str, subject: str) -> None:
    await aiosmtplib.send(
        reply(sender, to, subject),
        hostname="127.0.0.1",
        port=port,
        start_tls=False,
        use_tls=False,
        timeout=10,
    )


async def test_reply_reaches_postfix_through_auth_and_tls(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    t = f"reply-{uuid.uuid4().hex}"
    await submit(running_relay.submission_port, "support@good.test", "bob@good.test", t)
    delivered = await asyncio.to_thread(lab.find_message, t, "bob@good.test")
    # Postfix's Received line proves the hop was encrypted and authenticated (ESMTPSA).
    assert b"with ESMTPSA" in delivered.raw
    assert await running_relay.wait_idle(10)
    assert "event=outbound.delivered" in relay_env.log_text()
    assert lab.user.password not in relay_env.log_text()


async def test_unknown_sender_is_refused(relay_env: RelayEnv, running_relay: Relay) -> None:
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await submit(running_relay.submission_port, "stranger@good.test", "bob@good.test", "x")
    assert refused.value.code == 550


async def test_waits_in_spool_while_server_is_down(lab: Lab, relay_env: RelayEnv) -> None:
    assert lab.ca is not None
    port = free_ports(1)[0]
    write_profile(
        relay_env.profile,
        [
            {
                "address": "help@good.test",
                "mode": "outbound-only",
                "outbound": outbound_to(lab, port),
            }
        ],
        {
            "inbound_listen": "127.0.0.1:0",
            "submission_listen": "127.0.0.1:0",
            "tls_cert": str(lab.ca.relay.cert),
            "tls_key": str(lab.ca.relay.key),
            "spool": "spool",
            "retry_initial": 1,
            "sink": {"kind": "maildir", "path": "helpdesk"},
        },
    )
    relay = Relay.from_profile_file(relay_env.profile, settings=relay_env.settings, poll=0.2)
    await relay.start()
    # The stand-in for the customer's server presents the mail server's certificate: the relay
    # checks it against the profile's host name, as it does for the real one.
    sink = SmtpSink(
        lab.ca.server.cert, lab.ca.server.key, {lab.user.username: lab.user.password}, port=port
    )
    try:
        t = f"later-{uuid.uuid4().hex}"
        await submit(relay.submission_port, "help@good.test", "bob@good.test", t)
        # Refused connections are temporary: the reply waits, deferred, in the spool.
        for _ in range(200):
            items = list_queue(relay.spool, "outbound")
            if items and items[0].state.attempts >= 1:
                break
            await asyncio.sleep(0.05)
        assert items and items[0].state.attempts >= 1 and not items[0].state.held
        sink.start()
        message = await asyncio.to_thread(sink.wait_for_message, t.encode())
        assert message.tls and message.auth_login == lab.user.username
        assert await relay.wait_idle(10)
    finally:
        sink.stop()
        await relay.stop(grace=2.0)
