"""A reply the customer's server refuses for good comes back to the help desk as a DSN (never a
silent drop); SIGTERM in the middle of a client's DATA lets that session finish and keeps the
message."""

from __future__ import annotations

import asyncio
import email
import email.policy
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import BinaryIO

from lab.lab import Lab
from lab.postfix import SEND_AS_DENIED_RCPT
from smtpconn.relay.runtime import Relay

from .conftest import RelayEnv, RelayProcess
from .test_relay_outbound import submit


async def test_reply_refused_with_5xx_bounces_to_the_help_desk(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    subject = f"reply-{uuid.uuid4().hex}"
    # The lab Postfix refuses (550 5.4.4, at RCPT) every domain it neither hosts nor relays.
    unknown = f"customer-{uuid.uuid4().hex[:8]}@nowhere.invalid"
    await submit(running_relay.submission_port, "support@good.test", unknown, subject)
    dsn_raw = await asyncio.to_thread(relay_env.wait_for_sink, subject, 20)
    assert await running_relay.wait_idle(10)
    dsn = email.message_from_bytes(dsn_raw, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["To"] and "support@good.test" in dsn["To"]
    assert "relay-dsn" in str(dsn["X-Smtpconn-Tag"])
    report = dsn_raw.decode("utf-8", "replace")
    assert f"Final-Recipient: rfc822; {unknown}" in report
    assert "Action: failed" in report and "Status: 5.4.4" in report
    assert "550" in report and "Recipient address rejected" in report  # the server's words
    log = relay_env.log_text()
    assert "event=outbound.bounced" in log and f"rcpt={unknown}" in log
    assert lab.user.password not in log


def _reply(reader: BinaryIO) -> bytes:
    while True:
        line = reader.readline()
        if line[3:4] != b"-":
            return line


async def test_sigterm_mid_data_finishes_the_session_and_keeps_the_message(
    relay_env: RelayEnv, relay_process: Callable[..., RelayProcess]
) -> None:
    proc = relay_process()
    token = f"sigterm-{uuid.uuid4().hex}"
    sock = socket.create_connection(("127.0.0.1", proc.inbound_port), timeout=10)
    reader = sock.makefile("rb")
    try:
        assert _reply(reader).startswith(b"220")
        for command, expected in (
            (b"EHLO client.good.test", b"250"),
            (b"MAIL FROM:<someone@good.test>", b"250"),
            (f"RCPT TO:<{relay_env.addresses['outbound-only']}>".encode(), b"250"),
            (b"DATA", b"354"),
        ):
            sock.sendall(command + b"\r\n")
            assert _reply(reader).startswith(expected)
        sock.sendall(f"Subject: {token}\r\n\r\nfirst half\r\n".encode())
        proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "event=relay.stopping" not in proc.log.read_text():
            assert time.monotonic() < deadline, "the relay did not notice SIGTERM"
            await asyncio.sleep(0.05)
        # New connections are no longer accepted while the session in flight goes on.
        try:
            late = socket.create_connection(("127.0.0.1", proc.inbound_port), timeout=2)
        except OSError:
            pass
        else:
            late.close()
            raise AssertionError("the relay still accepts connections after SIGTERM")
        sock.sendall(b"second half\r\n.\r\n")
        assert _reply(reader).startswith(b"250 2.0.0 OK queued as")
        sock.sendall(b"QUIT\r\n")
        assert _reply(reader).startswith(b"221")
    finally:
        reader.close()
        sock.close()
    code = await asyncio.to_thread(proc.process.wait, 20)
    assert code == 0
    raw = await asyncio.to_thread(relay_env.wait_for_sink, token, 5)
    assert b"first half\nsecond half" in raw  # Maildir stores LF line ends
    log = proc.log.read_text()
    assert "event=relay.stopped" in log and "Traceback" not in log


async def test_a_dsn_explains_a_provider_refusal_with_the_catalogue(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    # The lab Postfix answers this recipient with Microsoft 365's 550 5.7.60.
    subject = f"sendas-{uuid.uuid4().hex}"
    await submit(running_relay.submission_port, "support@good.test", SEND_AS_DENIED_RCPT, subject)
    dsn_raw = await asyncio.to_thread(relay_env.wait_for_sink, subject, 20)
    assert await running_relay.wait_idle(10)
    report = " ".join(dsn_raw.decode("utf-8", "replace").split())
    assert "Status: 5.7.60" in report
    assert "Client does not have permissions to send as this sender" in report  # the server's
    assert "Microsoft 365: the authenticated mailbox may not send as this sender address" in report
    assert "Add-RecipientPermission" in report
    log = relay_env.log_text()
    assert "event=outbound.bounced" in log and "Add-RecipientPermission" in log
