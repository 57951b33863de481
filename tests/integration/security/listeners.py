"""Shared by the listener attack tests: relay profiles with extra ``[relay]`` keys and a raw
session opened the three ways a message can enter the relay."""

from __future__ import annotations

import tomllib
from enum import StrEnum
from typing import Any

import tomli_w

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import INBOUND_PASS, INBOUND_USER, RelayEnv

from .rawsmtp import RawSmtp


class Path(StrEnum):
    FORWARDING = "forwarding"  # plain inbound to the outbound-only address, no AUTH
    AUTHENTICATED = "authenticated"  # inbound after STARTTLS + AUTH, to the bidirectional one
    SUBMISSION = "submission"  # the help desk's loopback listener


def set_relay_keys(env: RelayEnv, **keys: Any) -> None:
    """Rewrite the fixture's profile with extra ``[relay]`` keys."""
    data = tomllib.loads(env.profile.read_text(encoding="utf-8"))
    data["relay"].update(keys)
    env.profile.write_text(tomli_w.dumps(data), encoding="utf-8")


async def open_session(lab: Lab, env: RelayEnv, relay: Relay, path: Path) -> RawSmtp:
    """Connected and greeted (and logged in where the path needs it)."""
    if path is Path.SUBMISSION:
        client = await RawSmtp.connect(relay.submission_port)
        await client.greet()
        return client
    client = await RawSmtp.connect(relay.inbound_port)
    if path is Path.AUTHENTICATED:
        await client.greet(lab.ca_file, (INBOUND_USER, INBOUND_PASS))
    else:
        await client.greet()
    return client


def envelope_for(env: RelayEnv, path: Path) -> tuple[str, str]:
    """(sender, recipient) the relay accepts on this path."""
    if path is Path.SUBMISSION:
        return f"support@{env.domain}", "someone@good.test"
    if path is Path.AUTHENTICATED:
        return "customer@good.test", f"support@{env.domain}"
    return "someone@good.test", f"forward@{env.domain}"


async def start_transaction(client: RawSmtp, sender: str, rcpt: str) -> None:
    reply = await client.cmd(f"MAIL FROM:<{sender}>")
    assert reply.startswith("250"), reply
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    assert reply.startswith("250"), reply
    reply = await client.cmd("DATA")
    assert reply.startswith("354"), reply


async def rest_of_session(client: RawSmtp) -> list[str]:
    """QUIT, then every reply until the relay closes: anything before the 221 answered a
    command the test did not send."""
    await client.send(b"QUIT\r\n")
    replies = []
    while True:
        reply = await client.reply()
        replies.append(reply)
        if reply.startswith("221") or "<closed>" in reply:
            return replies


def has_bare_newline(raw: bytes) -> bool:
    return raw.replace(b"\r\n", b"").count(b"\r") + raw.replace(b"\r\n", b"").count(b"\n") > 0


def has_control_char(text: str) -> bool:
    return any(c < " " or c == "\x7f" for c in text)
