"""Control characters a client (or a program the relay runs) puts into a
value reach the relay's log escaped, never raw: no forged log line, no terminal escape."""

from __future__ import annotations

import asyncio
import base64
import sys
import tomllib
import uuid

from lab.lab import Lab
from smtpconn.relay.runtime import Relay
from tests.integration.relay.conftest import (
    INBOUND_PASS,
    INBOUND_USER,
    RelayEnv,
    started_relay,
    write_profile,
)

from .rawsmtp import RawSmtp

# ESC (a terminal sequence), CR, LF (a forged log line), DEL, TAB, BEL (AUTH PLAIN
# cannot carry a NUL in the user name: NUL is in the envelope and the error text below).
HOSTILE = "a\x1b[2Jb\r\nevent=auth.ok user=admin\x7f\tc\x07"
ESCAPED = "a\\x1b[2Jb\\r\\nevent=auth.ok user=admin\\x7f\\tc\\x07"
# The sink's error text is the command's last stderr line: controls that do not end a line.
PROGRAM_ERROR = "starting\r\nqueue \x1b[31mfull\x00\x7f\tnow\x1b[0m"


def assert_no_raw_controls(lines: list[str]) -> None:
    for line in lines:
        bad = [c for c in line if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"]
        assert not bad, f"raw control characters {bad!r} in log line {line!r}"


async def test_client_values_are_escaped_in_the_log(
    lab: Lab, relay_env: RelayEnv, running_relay: Relay
) -> None:
    client = await RawSmtp.connect(running_relay.inbound_port)
    try:
        # A hostile EHLO name is refused (and not logged raw); a plain one goes on.
        assert (await client.cmd("EHLO x\x1b]0;owned\x07.example\x7f")).startswith("501")
        assert (await client.cmd("EHLO client.good.test")).startswith("250")
        await client.starttls(lab.ca_file)
        assert (await client.cmd("EHLO client.good.test")).startswith("250")
        # AUTH PLAIN with a hostile user name: refused, and logged as auth.failed.
        blob = base64.b64encode(f"\0{HOSTILE}\0wrong".encode()).decode()
        assert (await client.cmd(f"AUTH PLAIN {blob}")).startswith("535")
        assert (await client.login(INBOUND_USER, INBOUND_PASS)).startswith("235")
        # Control characters in the envelope are refused before anything is logged.
        token = f"logesc-{uuid.uuid4().hex}"
        mail = await client.cmd(b"MAIL FROM:<s\x1b[31m\x7fx@good.test>\r\n")
        assert mail.startswith("553 5.1.7"), mail
        assert (await client.cmd("MAIL FROM:<s@good.test>")).startswith("250")
        rcpt = await client.cmd(b"RCPT TO:<nobody\x1b[5m\x00@elsewhere.test>\r\n")
        assert rcpt[:1] == "5", rcpt
        assert (await client.cmd(f"RCPT TO:<support@{relay_env.domain}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        assert (await client.cmd(f"Subject: {token}\r\n\r\nx\r\n.\r\n".encode())).startswith("250")
    finally:
        await client.close()
    raw = await asyncio.to_thread(relay_env.wait_for_sink, token)
    assert running_relay is not None and await running_relay.wait_idle(10)
    lines = relay_env.log_lines
    assert_no_raw_controls(lines)
    [failed] = [line for line in lines if "event=auth.failed" in line]
    assert f'user="{ESCAPED}"' in failed, failed
    assert not any(line.startswith("event=auth.ok user=admin") for line in lines)
    head = raw.split(b"\n\n", 1)[0]
    assert b"\x1b" not in head and b"\x07" not in head and b"\x7f" not in head


async def test_a_programs_error_text_is_escaped_in_the_log(relay_env: RelayEnv) -> None:
    # The pipe command's last stderr line becomes the error text of inbound.held.
    script = relay_env.root / "fails.py"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdin.read()\n"
        f"sys.stderr.write({PROGRAM_ERROR!r})\nsys.exit(1)\n"
    )
    script.chmod(0o755)
    data = tomllib.loads(relay_env.profile.read_text())
    data["relay"]["sink"] = {"kind": "pipe", "command": [str(script)]}
    write_profile(relay_env.profile, data["addresses"], data["relay"])
    async with started_relay(relay_env, poll=0.1) as relay:
        client = await RawSmtp.connect(relay.inbound_port)
        try:
            assert (await client.cmd("EHLO client.good.test")).startswith("250")
            assert (await client.cmd("MAIL FROM:<s@good.test>")).startswith("250")
            rcpt = relay_env.addresses["outbound-only"]
            assert (await client.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
            assert (await client.cmd("DATA")).startswith("354")
            assert (await client.cmd(b"Subject: err\r\n\r\nx\r\n.\r\n")).startswith("250")
        finally:
            await client.close()
        for _ in range(200):
            if "event=inbound.held" in relay_env.log_text():
                break
            await asyncio.sleep(0.05)
    lines = relay_env.log_lines
    assert_no_raw_controls(lines)
    [held] = [line for line in lines if "event=inbound.held" in line]
    assert "queue \\x1b[31mfull\\x00\\x7f\\tnow\\x1b[0m" in held, held
