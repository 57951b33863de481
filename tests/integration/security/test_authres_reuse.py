"""A busy session's messages share one SPF evaluation and skip dkimpy when unsigned: a client
must not be able to hide a DKIM signature from the evaluation by spelling or folding its header
name, nor make a later message inherit an earlier one's ``dkim=`` result. Raw bytes over one
STARTTLS + AUTH session to a running relay; what the peer got, what reached the sink, what is left
in the spool and what the log says."""

from __future__ import annotations

import asyncio
import re
import uuid

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import INBOUND_PASS, INBOUND_USER, RelayEnv

from .rawsmtp import RawSmtp

HEAD = b"From: <someone@good.test>\r\nSubject: reuse\r\n"
# Header names dkimpy reads as a signature, in spellings a naive check would miss; d=good.test
# publishes no key under this selector, so dkimpy must report a result for good.test.
SIGNED = [
    b"dKiM-SiGnAtUrE: v=1; a=rsa-sha256; d=good.test; s=nokey; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-SIGNATURE:\r\n v=1; a=rsa-sha256; d=good.test;\r\n\ts=nokey; h=from; bh=AAAA; b=AAAA\r\n",
]
UNSIGNED_BUT_MENTIONED = b"X-Note: see DKIM-Signature below\r\n"


def _authres(raw: bytes) -> str:
    head = raw.split(b"\n\n", 1)[0].decode(errors="replace")
    found = re.search(r"Authentication-Results: relay\.helpdesk\.test;((?:\n\t.*)+)", head)
    assert found, head
    return found.group(1)


async def test_signatures_are_never_skipped_and_never_inherited(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    bodies = [
        HEAD,
        SIGNED[0] + HEAD,
        HEAD,
        SIGNED[1] + HEAD,
        UNSIGNED_BUT_MENTIONED + HEAD + b"\r\nDKIM-Signature: in the body, not a header\r\n",
    ]
    tokens = [f"reuse-{uuid.uuid4().hex}" for _ in bodies]
    client = await RawSmtp.connect(running_relay.inbound_port)
    replies = []
    try:
        await client.greet(lab.ca_file, (INBOUND_USER, INBOUND_PASS))
        for body, token in zip(bodies, tokens, strict=True):
            assert (await client.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
            assert (await client.cmd(f"RCPT TO:<support@{relay_env.domain}>")).startswith("250")
            assert (await client.cmd("DATA")).startswith("354")
            separator = b"" if b"\r\n\r\n" in body else b"\r\n"
            replies.append(await client.cmd(body + separator + f"{token}\r\n.\r\n".encode()))
    finally:
        await client.close()
    assert all(r.startswith("250 2.0.0 OK queued as ") for r in replies), replies
    copies = [await asyncio.to_thread(relay_env.wait_for_sink, t) for t in tokens]
    results = [_authres(raw) for raw in copies]

    spf = {re.search(r"spf=\w+", r).group(0) for r in results}  # type: ignore[union-attr]
    assert spf == {"spf=pass"}, results  # 127.0.0.1 is in good.test's SPF, every time
    for index in (0, 2, 4):
        assert "dkim=none" in results[index], results[index]
    for index in (1, 3):
        assert "dkim=none" not in results[index], results[index]
        assert re.search(r"dkim=(fail|permerror|temperror) header\.d=good\.test", results[index])

    ids = [r.rsplit(" ", 1)[1] for r in replies]
    await _until(lambda: not list((relay_env.spool / "inbound").iterdir()))

    def delivered_lines() -> list[str]:
        return [line for line in relay_env.log_lines if "event=inbound.delivered" in line]

    # The Maildir sink removes the spool entry in its own thread, and the hand-over logs
    # `inbound.delivered` once that thread is done: the folder can be empty a moment earlier.
    await _until(lambda: all(any(f"id={i} " in line for line in delivered_lines()) for i in ids))
    delivered = delivered_lines()
    for entry_id in ids:
        assert sum(f"id={entry_id} " in line for line in delivered) == 1, delivered


async def _until(done: object, timeout: float = 10.0) -> None:
    assert callable(done)
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "spool not emptied"
        await asyncio.sleep(0.05)
