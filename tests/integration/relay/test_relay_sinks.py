"""Every sink kind against a real receiver: a local HTTP server checking the HMAC signature, real
scripts with real exit codes, and real SMTP/LMTP servers. Temporary failures are retried and
delivered once; permanent ones are held in the spool, never dropped."""

from __future__ import annotations

import asyncio
import http.server
import smtplib
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from lab.proc import free_ports
from smtpconn.relay.queue import list_queue, retry
from smtpconn.relay.sinks.webhook import SIGNATURE_HEADER, verify_signature

from .conftest import RelayEnv, started_relay, write_profile

WEBHOOK_SECRET_ENV = "SMTPCONN_TEST_WEBHOOK_SECRET"
WEBHOOK_SECRET = "webhook-hmac-secret-7Jd"


def _set_sink(env: RelayEnv, sink: dict[str, Any]) -> None:
    data = tomllib.loads(env.profile.read_text())
    data["relay"]["sink"] = sink
    write_profile(env.profile, data["addresses"], data["relay"])


def _forward(port: int, rcpt: str, token: str) -> None:
    """Plain forwarding to an outbound-only address (no AUTH needed)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(
            "someone@good.test",
            [rcpt],
            f"From: someone@good.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\nhello\r\n",
        )


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- webhook ---------------------------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    answers: list[int]
    requests: list[tuple[int, bool, bytes, str]]  # (answered, signature ok, body, X-Smtpconn-Id)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify_signature(WEBHOOK_SECRET.encode(), body, self.headers[SIGNATURE_HEADER] or "")
        code = self.answers.pop(0) if self.answers else 200
        if not ok:
            code = 401
        self.requests.append((code, ok, body, self.headers["X-Smtpconn-Id"] or ""))
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[type[_Hook]]:
    handler = type("Hook", (_Hook,), {"answers": [500], "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.port = server.server_address[1]  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_webhook_signed_500_then_200_is_retried_and_delivered_once(
    relay_env: RelayEnv, webhook: type[_Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET)
    url = f"http://127.0.0.1:{webhook.port}/mail"  # type: ignore[attr-defined]
    _set_sink(relay_env, {"kind": "webhook", "url": url, "secret": f"env:{WEBHOOK_SECRET_ENV}"})
    token = f"hook-{uuid.uuid4().hex}"
    async with started_relay(relay_env, poll=0.1) as relay:
        rcpt = relay_env.addresses["outbound-only"]
        await asyncio.to_thread(_forward, relay.inbound_port, rcpt, token)
        await _until(lambda: any(r[0] == 200 for r in webhook.requests), "the webhook's 200")
        assert await relay.wait_idle(10)
    answered = [r[0] for r in webhook.requests]
    assert answered == [500, 200]  # retried after the 500, and delivered exactly once
    assert all(r[1] for r in webhook.requests), "every request carries a valid HMAC signature"
    assert webhook.requests[0][3] == webhook.requests[1][3]  # same id: receivers can de-duplicate
    body = webhook.requests[1][2]
    assert token.encode() in body and b'"tag": "unauthenticated"' in body
    log = relay_env.log_text()
    assert "event=inbound.deferred" in log and "HTTP 500" in log
    assert log.count("event=inbound.delivered") == 1
    assert WEBHOOK_SECRET not in log


async def test_webhook_answering_403_holds_the_message(
    relay_env: RelayEnv, webhook: type[_Hook], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET)
    webhook.answers[:] = [403]
    url = f"http://127.0.0.1:{webhook.port}/mail"  # type: ignore[attr-defined]
    _set_sink(relay_env, {"kind": "webhook", "url": url, "secret": f"env:{WEBHOOK_SECRET_ENV}"})
    async with started_relay(relay_env, poll=0.1) as relay:
        await asyncio.to_thread(
            _forward, relay.inbound_port, relay_env.addresses["outbound-only"], "held-hook"
        )
        await _until(lambda: "event=inbound.held" in relay_env.log_text(), "the hold")
    [item] = list_queue(relay.spool, "inbound")
    assert item.state.held and "HTTP 403" in (item.state.last_error or "")
    assert [r[0] for r in webhook.requests] == [403]


# -- pipe ------------------------------------------------------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\nimport os, sys\n{body}\n")
    path.chmod(0o755)
    return path


async def test_pipe_exit_75_is_retried_then_delivered(relay_env: RelayEnv) -> None:
    out = relay_env.root / "piped"
    out.mkdir()
    script = _script(
        relay_env.root / "mailgate.py",
        f"""out = {str(out)!r}
runs = len(os.listdir(out))
open(os.path.join(out, f"run{{runs}}"), "wb").write(
    os.environ["SMTPCONN_TAG"].encode() + b"\\n" + sys.stdin.buffer.read())
sys.exit(75 if runs == 0 else 0)""",
    )
    _set_sink(relay_env, {"kind": "pipe", "command": [str(script), "--queue", "general"]})
    token = f"pipe-{uuid.uuid4().hex}"
    async with started_relay(relay_env, poll=0.1) as relay:
        await asyncio.to_thread(
            _forward, relay.inbound_port, relay_env.addresses["outbound-only"], token
        )
        await _until(lambda: (out / "run1").exists(), "the second run")
        assert await relay.wait_idle(10)
    assert sorted(p.name for p in out.iterdir()) == ["run0", "run1"]  # one retry, then done
    delivered = (out / "run1").read_bytes()
    assert delivered.startswith(b"unauthenticated\n") and token.encode() in delivered
    assert b"X-Smtpconn-Tag: unauthenticated; mode=outbound-only" in delivered
    assert relay_env.log_text().count("event=inbound.delivered") == 1


async def test_pipe_exit_1_is_held_not_dropped_and_retry_releases_it(
    relay_env: RelayEnv,
) -> None:
    flag = relay_env.root / "fixed"
    script = _script(
        relay_env.root / "mailgate.py",
        f"""sys.stdin.buffer.read()
if not os.path.exists({str(flag)!r}):
    print("queue general does not exist", file=sys.stderr)
    sys.exit(1)""",
    )
    _set_sink(relay_env, {"kind": "pipe", "command": [str(script)]})
    async with started_relay(relay_env, poll=0.1) as relay:
        await asyncio.to_thread(
            _forward, relay.inbound_port, relay_env.addresses["outbound-only"], "pipe-held"
        )
        await _until(lambda: "event=inbound.held" in relay_env.log_text(), "the hold")
        [item] = list_queue(relay.spool, "inbound")
        assert item.state.held and item.state.attempts == 1
        assert "exited 1: queue general does not exist" in (item.state.last_error or "")
        # The administrator fixes the help desk side and releases the message.
        flag.touch()
        retry(relay.spool, [item.short_id])
        assert await relay.wait_idle(10)
    assert "event=inbound.delivered" in relay_env.log_text()


# -- smtp / lmtp -----------------------------------------------------------------------------


class _Collector:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse:
            return "550 5.1.1 No such queue"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK delivered"


class _LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler)


@pytest.mark.parametrize("kind", ["smtp", "lmtp"])
@pytest.mark.parametrize("refuse", [False, True], ids=["accepted", "refused"])
async def test_forward_sink_delivers_or_holds(relay_env: RelayEnv, kind: str, refuse: bool) -> None:
    collector = _Collector(refuse)
    controller_class = _LmtpController if kind == "lmtp" else Controller
    [port] = free_ports(1)
    controller = controller_class(collector, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        _set_sink(relay_env, {"kind": kind, "host": "127.0.0.1", "port": port})
        token = f"{kind}-{uuid.uuid4().hex}"
        rcpt = relay_env.addresses["outbound-only"]
        async with started_relay(relay_env, poll=0.1) as relay:
            await asyncio.to_thread(_forward, relay.inbound_port, rcpt, token)
            if refuse:
                await _until(lambda: "event=inbound.held" in relay_env.log_text(), "the hold")
                [item] = list_queue(relay.spool, "inbound")
                assert item.state.held and "550" in (item.state.last_error or "")
            else:
                assert await relay.wait_idle(10)
    finally:
        controller.stop()
    if refuse:
        assert collector.messages == []
        return
    [(mail_from, rcpts, content)] = collector.messages
    assert mail_from == "someone@good.test" and rcpts == [rcpt]
    assert token.encode() in content and b"X-Smtpconn-Tag: unauthenticated" in content
