"""STARTTLS response injection against smtpconn's own clients.

A man in the middle who cannot break TLS (``InjectingProxy``, a real TCP proxy in front of the
lab's real Postfix or a real STARTTLS sink) appends forged replies right after the server's 220
to STARTTLS. A client that reads them as the first replies inside TLS reports a login that
failed as passed, a queue id the server never gave, and a reply as delivered that never left.
Every client of smtpconn must abandon such a session instead: verify and send-test say so, the
relay keeps the mail (deferred, retried, never "delivered", never bounced).
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiosmtplib
import pytest

from lab.lab import Lab
from lab.sink import SmtpSink
from smtpconn.addresses import parse_address
from smtpconn.checks.model import CheckContext, Status
from smtpconn.checks.tls_auth import run_tls_auth
from smtpconn.dns import CachingResolver
from smtpconn.dns.resolvers import make_resolver, parse_resolver
from smtpconn.profile.model import (
    AuthMechanism,
    Mode,
    OutboundServer,
    Security,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.secrets import SecretRef
from smtpconn.relay.queue import QueueItem, list_queue
from smtpconn.relay.spool import Spool
from smtpconn.settings import Settings
from tests.conftest import CliInvoker
from tests.integration.relay.conftest import RelayEnv, outbound_to, started_relay, write_profile

from .injecting_proxy import InjectingProxy, injecting_proxy

INJECTION = "possible STARTTLS injection by a middlebox"
SECRET_ENV = "SMTPCONN_TEST_INJECTION_SECRET"
RECIPIENT = "bob@good.test"


@pytest.fixture
def proxy(lab: Lab) -> Iterator[InjectingProxy]:
    """The injecting proxy in front of the lab Postfix's submission port."""
    with injecting_proxy(lab.ports["submission"]) as p:
        yield p


def _assert_attacked(proxy: InjectingProxy) -> None:
    """The attack really ran, and the client sent nothing after it: no ClientHello, no EHLO,
    no AUTH (the forged replies were found right after the 220)."""
    assert proxy.injections >= 1
    assert proxy.client_bytes_after_injection == 0


def _not_at_postfix(lab: Lab, token: str) -> None:
    time.sleep(1.0)  # what Postfix accepted would be in the Maildir well within this
    assert not any(token.encode() in m.raw for m in lab.messages(RECIPIENT))


# -- verify ----------------------------------------------------------------------------------


async def test_verify_does_not_believe_an_injected_login(
    lab: Lab, proxy: InjectingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "a-wrong-password")
    entry = SupportAddress(
        address=parse_address("support@good.test"),
        mode=Mode.BIDIRECTIONAL,
        workflow=Workflow.AUTHENTICATED,
        outbound=OutboundServer(
            host=lab.server_name,
            port=proxy.port,
            security=Security.STARTTLS,
            auth=AuthMechanism.AUTO,
            username=lab.user.username,
            secret=SecretRef("env", SECRET_ENV),
        ),
    )
    settings = Settings(resolvers=(parse_resolver(lab.resolver),), ca_file=lab.ca_file, timeout=5)
    transcript: list[str] = []
    ctx = CheckContext(
        settings=settings,
        base_dir=Path("."),
        resolver=CachingResolver(make_resolver(settings.resolvers, timeout=5)),
        transcript=transcript.append,
    )
    results = {r.id: r for r in await run_tls_auth(ctx, entry)}
    starttls = results["tls.starttls"]
    assert starttls.status is Status.FAIL, starttls
    assert INJECTION in starttls.summary and INJECTION in starttls.detail
    assert "middle" in starttls.fix
    assert results["auth.login"].status is not Status.PASS, results["auth.login"]
    assert not any(" C: AUTH" in line for line in transcript)
    _assert_attacked(proxy)


# -- send-test --------------------------------------------------------------------------------


def _profile(lab: Lab, tmp_path: Path, port: int) -> Path:
    profile = tmp_path / "smtpconn.toml"
    profile.write_text(
        f"""version = 1

[[addresses]]
address = "support@good.test"
mode = "outbound-only"
workflow = "authenticated"

[addresses.outbound]
host = "{lab.server_name}"
port = {port}
security = "starttls"
auth = "auto"
username = "{lab.user.username}"
secret = "env:{SECRET_ENV}"
"""
    )
    profile.chmod(0o600)
    return profile


def test_send_test_reports_the_injection_not_a_queue_id(
    lab: Lab,
    proxy: InjectingProxy,
    cli: CliInvoker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The right password: the real server would take the message if the session went on.
    monkeypatch.setenv(SECRET_ENV, lab.user.password)
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--json",
        "--profile", str(_profile(lab, tmp_path, proxy.port)),
        "--resolver", lab.resolver, "--ca-file", str(lab.ca_file), "--timeout", "5",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["accepted"] is False
    assert report["queue_id"] is None and "INJECTED42" not in result.stdout
    assert report["failure"]["kind"] == "starttls-injection"
    assert report["failure"]["stage"] == "starttls"
    assert INJECTION in report["problem"]
    assert [r["accepted"] for r in report["recipients"]] == [False]
    _assert_attacked(proxy)
    _not_at_postfix(lab, report["token"])


def test_send_test_human_output_names_the_injection(
    lab: Lab,
    proxy: InjectingProxy,
    cli: CliInvoker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, lab.user.password)
    result = cli(
        "send-test", "support@good.test", "--to", RECIPIENT, "--no-color",
        "--profile", str(_profile(lab, tmp_path, proxy.port)),
        "--resolver", lab.resolver, "--ca-file", str(lab.ca_file), "--timeout", "5",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "INJECTION" in " ".join(result.stdout.upper().split())
    assert "queue id" not in result.stdout


# -- relay outbound ---------------------------------------------------------------------------


async def _until_attempted(spool: Spool, direction: str, attempts: int) -> QueueItem:
    deadline = time.monotonic() + 30
    items: list[QueueItem] = []
    while time.monotonic() < deadline:
        items = list_queue(spool, direction)
        if items and items[0].state.attempts >= attempts:
            return items[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {direction} item reached {attempts} attempts: {items}")


async def test_relay_defers_a_reply_instead_of_losing_it(
    lab: Lab, relay_env: RelayEnv, proxy: InjectingProxy
) -> None:
    assert lab.ca is not None
    write_profile(
        relay_env.profile,
        [
            {
                "address": "help@good.test",
                "mode": "outbound-only",
                "outbound": outbound_to(lab, proxy.port),
            }
        ],
        {
            "inbound_listen": "127.0.0.1:0",
            "submission_listen": "127.0.0.1:0",
            "tls_cert": str(lab.ca.relay.cert),
            "tls_key": str(lab.ca.relay.key),
            "spool": "spool",
            "hostname": "relay.helpdesk.test",
            "retry_initial": 1,
            "sink": {"kind": "maildir", "path": "helpdesk"},
        },
    )
    token = f"injected-reply-{uuid.uuid4().hex}"
    async with started_relay(relay_env, poll=0.1) as relay:
        await _submit(relay.submission_port, token)
        item = await _until_attempted(relay.spool, "outbound", 2)
    assert not item.state.held and item.state.done == []
    assert INJECTION in (item.state.last_error or "")
    log = relay_env.log_text()
    deferred = [line for line in log.splitlines() if "event=outbound.deferred" in line]
    assert deferred and all(INJECTION in line for line in deferred), log
    assert "event=outbound.delivered" not in log
    assert "event=outbound.bounced" not in log
    assert relay_env.sink_messages() == []  # no DSN to the help desk either
    _assert_attacked(proxy)
    await asyncio.to_thread(_not_at_postfix, lab, token)


async def _submit(port: int, token: str) -> None:
    await aiosmtplib.send(
        f"From: help@good.test\r\nTo: {RECIPIENT}\r\nSubject: {token}\r\n\r\nanswer\r\n",
        sender="help@good.test",
        recipients=[RECIPIENT],
        hostname="127.0.0.1",
        port=port,
        start_tls=False,
        use_tls=False,
        timeout=10,
    )


# -- the relay's SMTP sink --------------------------------------------------------------------

SINK_REPLIES = (
    b"250-relay.helpdesk.test\r\n250 8BITMIME\r\n"
    b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n250 2.0.0 Ok: queued as INJECTED42\r\n"
)


@pytest.fixture
def sink_behind_proxy(
    smtp_sink: Callable[..., SmtpSink],
) -> Iterator[tuple[SmtpSink, InjectingProxy]]:
    sink = smtp_sink()  # STARTTLS with the relay certificate (valid for 127.0.0.1), no AUTH
    with injecting_proxy(sink.port, SINK_REPLIES) as p:
        yield sink, p


async def test_smtp_sink_keeps_the_message_queued(
    relay_env: RelayEnv, sink_behind_proxy: tuple[SmtpSink, InjectingProxy]
) -> None:
    sink, proxy = sink_behind_proxy
    data = tomllib.loads(relay_env.profile.read_text())
    data["relay"]["sink"] = {"kind": "smtp", "host": "127.0.0.1", "port": proxy.port}
    write_profile(relay_env.profile, data["addresses"], data["relay"])
    token = f"sink-{uuid.uuid4().hex}"
    rcpt = relay_env.addresses["outbound-only"]
    async with started_relay(relay_env, poll=0.1) as relay:
        await asyncio.to_thread(_forward, relay.inbound_port, rcpt, token)
        item = await _until_attempted(relay.spool, "inbound", 2)
    assert not item.state.held
    assert INJECTION in (item.state.last_error or "")
    assert sink.messages == []
    log = relay_env.log_text()
    assert "event=inbound.delivered" not in log
    assert any(
        "event=inbound.deferred" in line and INJECTION in line for line in log.splitlines()
    ), log
    _assert_attacked(proxy)


def _forward(port: int, rcpt: str, token: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(
            "someone@good.test",
            [rcpt],
            f"From: someone@good.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\nhello\r\n",
        )
