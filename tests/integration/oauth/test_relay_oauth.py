"""The relay with an OAuth token source, against the lab's oauth_submission port (Dovecot checks
every token at the lab issuer): tokens living 5 s never cause a deferral; a revoked login defers
(never bounces) with one log line naming the cause and the fix, and a new login releases the
backlog without a restart."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from lab.lab import Lab
from lab.oauth import SMTP_SCOPE, LabClient, LabOAuthServer
from smtpconn.oauth import device
from smtpconn.oauth.providers import Flow
from smtpconn.oauth.source import TokenSourceSpec
from tests.integration.relay.conftest import RelayEnv, started_relay, write_profile
from tests.integration.relay.test_relay_metrics import _get, _samples
from tests.integration.relay.test_relay_outbound import submit
from tests.integration.relay.test_relay_status import _status

RECIPIENT = "bob@good.test"
SENDER = "support@good.test"


def _login(issuer: LabOAuthServer, lab: Lab, cache: Path) -> None:
    """What `smtpconn oauth login` does: a device-code login, approved by the mailbox owner."""
    spec = TokenSourceSpec(
        Flow.REFRESH_TOKEN, issuer.token_endpoint, SMTP_SCOPE, client_id="public-app",
        cache_path=cache, device_endpoint=issuer.device_endpoint, ca_file=lab.ca_file,
    )  # fmt: skip
    login = device.start(spec)
    threading.Timer(0.3, issuer.approve, (login.user_code, lab.user.username)).start()
    device.wait(spec, login, account=lab.user.username)


def _oauth_profile(
    lab: Lab, env: RelayEnv, issuer: LabOAuthServer, cache: Path, *, metrics: bool = False
) -> None:
    assert lab.ca is not None
    outbound: dict[str, Any] = {
        "host": lab.server_name,
        "port": lab.ports["oauth_submission"],
        "security": "starttls",
        "auth": "xoauth2",
        "username": lab.user.username,
        "oauth": {
            "provider": "generic",
            "flow": "refresh-token",
            "client_id": "public-app",
            "token_cache": str(cache),
            "token_endpoint": issuer.token_endpoint,
            "scope": SMTP_SCOPE,
        },
    }
    relay = {
        "inbound_listen": "127.0.0.1:0",
        "submission_listen": "127.0.0.1:0",
        "tls_cert": str(lab.ca.relay.cert),
        "tls_key": str(lab.ca.relay.key),
        "spool": "spool",
        "hostname": "relay.helpdesk.test",
        "retry_initial": 1,
        "sink": {"kind": "maildir", "path": "helpdesk"},
    }
    if metrics:
        relay["metrics_listen"] = "127.0.0.1:0"
    write_profile(
        env.profile, [{"address": SENDER, "mode": "outbound-only", "outbound": outbound}], relay
    )


def _secrets_absent(text: str, issuer: LabOAuthServer) -> None:
    for token in [*issuer.state.access, *issuer.state.refresh]:
        assert token not in text


async def test_200_replies_with_5_second_tokens_are_never_deferred(
    lab: Lab, relay_env: RelayEnv, lab_issuer: LabOAuthServer, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("public-app"))
    lab_issuer.state.lifetime = 5
    lab_issuer.state.rotate_refresh_tokens = True
    cache = tmp_path / "tokens" / "support.json"
    await asyncio.to_thread(_login, lab_issuer, lab, cache)
    _oauth_profile(lab, relay_env, lab_issuer, cache)
    run = uuid.uuid4().hex[:8]
    async with started_relay(relay_env) as relay:
        for i in range(200):
            await submit(relay.submission_port, SENDER, RECIPIENT, f"oauth-{run}-{i}")
            await asyncio.sleep(0.06)  # spread over ~12 s: tokens expire twice on the way
        assert await relay.wait_idle(60)
    for i in (0, 99, 199):
        await asyncio.to_thread(lab.find_message, f"oauth-{run}-{i}", RECIPIENT)
    delivered = [d for d in lab.messages(RECIPIENT) if f"oauth-{run}-".encode() in d.raw]
    assert len(delivered) == 200
    log = relay_env.log_text()
    assert "outbound.deferred" not in log and "outbound.bounced" not in log
    assert log.count("event=outbound.delivered") == 200
    assert lab_issuer.state.grants.count("refresh_token") >= 2  # refreshed as tokens expired
    _secrets_absent(log, lab_issuer)


async def test_revoked_login_defers_with_the_fix_and_a_new_login_releases_the_backlog(
    lab: Lab, relay_env: RelayEnv, lab_issuer: LabOAuthServer, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("public-app"))
    lab_issuer.state.lifetime = 2
    cache = tmp_path / "support.json"
    await asyncio.to_thread(_login, lab_issuer, lab, cache)
    _oauth_profile(lab, relay_env, lab_issuer, cache)
    lab_issuer.revoke_refresh_tokens(lab.user.username)
    run = uuid.uuid4().hex[:8]
    async with started_relay(relay_env) as relay:
        for i in range(3):
            await submit(relay.submission_port, SENDER, RECIPIENT, f"revoked-{run}-{i}")
        for _ in range(100):
            if relay_env.log_text().count("outbound.deferred") >= 3:
                break
            await asyncio.sleep(0.1)
        deferred = [line for line in relay_env.log_lines if "outbound.deferred" in line]
        assert len(deferred) >= 3
        assert all("invalid_grant" in line for line in deferred)
        assert all("smtpconn oauth login" in line for line in deferred)
        # A new login, while the relay keeps running: the next retry goes through.
        await asyncio.to_thread(_login, lab_issuer, lab, cache)
        for i in range(3):
            await asyncio.to_thread(lab.find_message, f"revoked-{run}-{i}", RECIPIENT, 30)
        assert await relay.wait_idle(30)
    log = relay_env.log_text()
    assert "outbound.bounced" not in log
    assert not relay_env.sink_messages()  # no DSN reached the help desk
    _secrets_absent(log, lab_issuer)


async def test_a_token_revoked_before_expiry_is_replaced_after_the_535(
    lab: Lab, relay_env: RelayEnv, lab_issuer: LabOAuthServer, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("public-app"))
    cache = tmp_path / "support.json"
    await asyncio.to_thread(_login, lab_issuer, lab, cache)
    _oauth_profile(lab, relay_env, lab_issuer, cache)
    run = uuid.uuid4().hex[:8]
    async with started_relay(relay_env) as relay:
        await submit(relay.submission_port, SENDER, RECIPIENT, f"first-{run}")
        await asyncio.to_thread(lab.find_message, f"first-{run}", RECIPIENT)
        # The cached token (valid for an hour) dies at the provider; the idle session closes.
        lab_issuer.revoke_access_tokens(lab.user.username)
        await asyncio.sleep(6)
        await submit(relay.submission_port, SENDER, RECIPIENT, f"second-{run}")
        await asyncio.to_thread(lab.find_message, f"second-{run}", RECIPIENT, 10)
        assert await relay.wait_idle(10)
    assert "outbound.deferred" not in relay_env.log_text()
    assert lab_issuer.state.grants.count("refresh_token") == 2  # one more, after the 535


async def _token_expires(env: RelayEnv) -> str | None:
    """``token_expires`` of the sender in ``status --json`` (the relay writes its status file
    at most once a second)."""
    expires = None
    for _ in range(30):
        _code, document = await asyncio.to_thread(_status, env)
        [item] = [a for a in document["addresses"] if a["address"] == SENDER]
        if (expires := item["token_expires"]) is not None:
            break
        await asyncio.sleep(0.3)
    return expires


async def test_token_expiry_in_status_and_metrics_and_never_the_token(
    lab: Lab, relay_env: RelayEnv, lab_issuer: LabOAuthServer, tmp_path: Path
) -> None:
    lab_issuer.add_client(LabClient("public-app"))
    lab_issuer.state.lifetime = 3600
    cache = tmp_path / "support.json"
    await asyncio.to_thread(_login, lab_issuer, lab, cache)
    _oauth_profile(lab, relay_env, lab_issuer, cache, metrics=True)
    run = uuid.uuid4().hex[:8]
    async with started_relay(relay_env) as relay:
        await submit(relay.submission_port, SENDER, RECIPIENT, f"expiry-{run}")
        await asyncio.to_thread(lab.find_message, f"expiry-{run}", RECIPIENT)
        assert await relay.wait_idle(10)
        assert relay.metrics_port
        port = relay.metrics_port
        samples = await asyncio.to_thread(_samples, port)
        left = samples[("smtpconn_oauth_token_expiry_seconds", frozenset({("address", SENDER)}))]
        assert 3000 < left <= 3600
        _status_code, metrics_body = await asyncio.to_thread(_get, port, "/metrics")
        expires = await _token_expires(relay_env)
    assert expires is not None
    assert 3000 < datetime.fromisoformat(expires).timestamp() - time.time() <= 3600
    log = relay_env.log_text()
    token_lines = [line for line in relay_env.log_lines if "event=oauth.token" in line]
    assert len(token_lines) == 1  # obtained once, reused for the delivery
    assert f"address={SENDER}" in token_lines[0] and "expires=" in token_lines[0]
    status_file = (relay_env.spool / "status.json").read_text()
    assert lab_issuer.state.access and lab_issuer.state.refresh
    for text in (log, status_file, metrics_body.decode()):
        _secrets_absent(text, lab_issuer)
