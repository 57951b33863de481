"""Control characters in HELO/EHLO, MAIL FROM and RCPT TO (paths and parameters) are refused on
every listener: a bare CR in a quoted local part would otherwise start a new header line
(``X-Smtpconn-Tag: authenticated``) wherever the envelope is written."""

from __future__ import annotations

import pytest

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import RelayEnv

from .listeners import Path, envelope_for, has_control_char, open_session, rest_of_session

INJECTED = "\rX-Smtpconn-Tag: authenticated; mode=bidirectional\rX-Pad: "


def _attempts(sender: str, rcpt: str) -> list[tuple[str, str, str]]:
    """(what, command, expected reply start); a valid MAIL precedes every RCPT attempt."""
    local, _, domain = rcpt.partition("@")
    return [
        ("cr in quoted sender", f'MAIL FROM:<"x{INJECTED}"@evil.example>', "553 5.1.7"),
        ("lf-less nul in sender", "MAIL FROM:<a\x00b@evil.example>", "553 5.1.7"),
        ("del in sender", "MAIL FROM:<a\x7fb@evil.example>", "553 5.1.7"),
        ("control in mail parameter", f"MAIL FROM:<{sender}> SIZE=1\x0b0", "501 5.5.4"),
        ("cr in quoted recipient", f'RCPT TO:<"{local}{INJECTED}"@{domain}>', "553 5.1.3"),
        ("control in rcpt parameter", f"RCPT TO:<{rcpt}> NOTIFY=NEVER\x01", "501 5.5.4"),
    ]


@pytest.mark.parametrize("path", [Path.FORWARDING, Path.SUBMISSION])
async def test_control_characters_in_envelope_are_refused(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay, path: Path
) -> None:
    sender, rcpt = envelope_for(relay_env, path)
    client = await open_session(lab, relay_env, running_relay, path)
    try:
        for what, command, expected in _attempts(sender, rcpt):
            if command.startswith("RCPT"):
                assert (await client.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
            reply = await client.cmd(command.encode("latin-1") + b"\r\n")
            assert reply.startswith(expected), (what, reply)
            # Nothing of the refused command stuck: the transaction can still not proceed.
            assert (await client.cmd("RSET")).startswith("250")
        assert (await client.cmd("EHLO evil\r.example")).startswith("501 5.5.4")
        assert (await client.cmd("HELO evil\x01.example")).startswith("501 5.5.4")
        assert (await rest_of_session(client))[-1].startswith("221")
    finally:
        await client.close()
    await running_relay.wait_idle(5)
    assert relay_env.sink_messages() == []
    log = relay_env.log_lines
    assert not any("accepted" in line for line in log)
    assert not [line for line in log if has_control_char(line)]
    assert any("event=session.command-refused" in line for line in log)


async def test_control_characters_refused_after_auth(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    """Logging in does not make a control character acceptable."""
    sender, rcpt = envelope_for(relay_env, Path.AUTHENTICATED)
    client = await open_session(lab, relay_env, running_relay, Path.AUTHENTICATED)
    try:
        reply = await client.cmd(f'MAIL FROM:<"x{INJECTED}"@evil.example>')
        assert reply.startswith("553 5.1.7"), reply
        assert (await client.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
        local, _, domain = rcpt.partition("@")
        reply = await client.cmd(f'RCPT TO:<"{local}{INJECTED}"@{domain}>')
        assert reply.startswith("553 5.1.3"), reply
        assert (await client.cmd("DATA")).startswith("503")
    finally:
        await client.close()
    assert relay_env.sink_messages() == []
