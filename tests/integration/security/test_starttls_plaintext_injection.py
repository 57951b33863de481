"""Clear-text commands pipelined after the client's STARTTLS (RFC 3207 §5, the "STARTTLS command
injection" of CVE-2011-0411): a man in the middle appends ``MAIL``/``AUTH`` to the client's
``STARTTLS`` in the same packet; a server that keeps them runs them inside the TLS session as
if the client had sent them encrypted. The relay's listeners must discard them, on asyncio's
loop (the in-process relay) and on uvloop (``smtpconn relay`` as a process), both going through
the event loop's own ``start_tls``."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable

import pytest

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import INBOUND_PASS, INBOUND_USER, RelayEnv, RelayProcess

from .rawsmtp import RawSmtp


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def _attack(lab: Lab, env: RelayEnv, port: int) -> None:
    client = await RawSmtp.connect(port)
    try:
        assert (await client.cmd("EHLO attacker.example")).startswith("250")
        injected = (
            b"STARTTLS\r\n"
            + f"AUTH PLAIN {_plain(INBOUND_USER, INBOUND_PASS)}\r\n".encode()
            + b"MAIL FROM:<forged@attacker.example>\r\n"
        )
        await client.send(injected)
        assert (await client.reply()).startswith("220")
        context = ssl.create_default_context(cafile=str(lab.ca_file))
        await client.writer.start_tls(context, server_hostname="relay.helpdesk.test")
        # The first reply inside TLS answers this EHLO (multi-line), not the injected commands.
        ehlo = await client.cmd("EHLO attacker.example")
        assert ehlo.startswith("250-") and "STARTTLS" not in ehlo, ehlo
        # No transaction and no login came over from the clear-text part.
        rcpt = await client.cmd(f"RCPT TO:<support@{env.domain}>")
        assert rcpt.startswith("503"), rcpt
        again = await client.cmd("STARTTLS")
        assert again.startswith("554"), again  # never TLS inside TLS
        login = await client.login(INBOUND_USER, INBOUND_PASS)
        assert login.startswith("235"), login  # not "503 Already authenticated"
        assert (await client.cmd("QUIT")).startswith("221")
    finally:
        await client.close()


async def test_pipelined_clear_text_is_discarded_in_process(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    await _attack(lab, relay_env, running_relay.inbound_port)
    assert sum("event=auth.ok" in line for line in relay_env.log_lines) == 1


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_pipelined_clear_text_is_discarded_by_the_relay_process(
    lab: Lab,
    relay_env: RelayEnv,
    relay_process: Callable[..., RelayProcess],
    monkeypatch: pytest.MonkeyPatch,
    loop: str,
) -> None:
    monkeypatch.setenv("SMTPCONN_EVENT_LOOP", loop)
    relay = relay_process()
    await _attack(lab, relay_env, relay.inbound_port)
    log = relay.log.read_text()
    assert log.count("event=auth.ok") == 1, log


async def test_clients_vanishing_during_the_handshake_free_their_slots(
    relay_env: RelayEnv, running_relay: Relay
) -> None:
    # More than max_connections_per_ip (20) sessions that say STARTTLS and go away before (or
    # in the middle of) the handshake: each must give its per-IP slot back.
    for index in range(25):
        client = await RawSmtp.connect(running_relay.inbound_port)
        assert (await client.cmd("EHLO attacker.example")).startswith("250")
        assert (await client.cmd("STARTTLS")).startswith("220")
        if index % 2:
            await client.send(b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello
        await client.close()
    client = await RawSmtp.connect(running_relay.inbound_port)
    try:
        assert client.banner.startswith("220"), client.banner
    finally:
        await client.close()
