"""The metrics listener of a real relay: /metrics parsed with prometheus_client's own parser
matches what was sent; /readyz turns 503 (with a JSON reason) while the sink fails and 200 again
once it answers; /healthz answers while the process serves."""

from __future__ import annotations

import asyncio
import json
import tomllib
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.lab import Lab
from tests.integration.security.rawsmtp import RawSmtp

from .conftest import INBOUND_PASS, INBOUND_USER, RelayEnv, started_relay, write_profile
from .test_relay_sinks import (
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_ENV,
    _forward,
    _Hook,
    _until,
    webhook,  # noqa: F401  (a fixture, used by name)
)


def _enable_metrics(env: RelayEnv, sink: dict[str, Any] | None = None) -> None:
    data = tomllib.loads(env.profile.read_text())
    data["relay"]["metrics_listen"] = "127.0.0.1:0"
    if sink is not None:
        data["relay"]["sink"] = sink
    write_profile(env.profile, data["addresses"], data["relay"])


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = _get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _authenticated(port: int, lab: Lab, rcpt: str, token: str) -> None:
    client = await RawSmtp.connect(port)
    try:
        await client.greet(lab.ca_file, (INBOUND_USER, INBOUND_PASS))
        assert (await client.cmd("MAIL FROM:<someone@good.test>")).startswith("250")
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        assert (await client.cmd(f"Subject: {token}\r\n\r\nx\r\n.\r\n".encode())).startswith("250")
    finally:
        await client.close()


async def test_metrics_count_what_was_sent(lab: Lab, relay_env: RelayEnv) -> None:
    _enable_metrics(relay_env)
    support = relay_env.addresses["bidirectional"]
    forward = relay_env.addresses["outbound-only"]
    async with started_relay(relay_env) as relay:
        port = relay.metrics_port
        assert port
        for i in range(3):
            await _authenticated(relay.inbound_port, lab, support, f"m-auth-{i}")
        for i in range(2):
            await asyncio.to_thread(_forward, relay.inbound_port, forward, f"m-fwd-{i}")
        client = await RawSmtp.connect(relay.inbound_port)
        await client.greet(lab.ca_file)
        assert (await client.login(INBOUND_USER, "wrong-password")).startswith("535")
        await client.close()
        assert await relay.wait_idle(20)
        samples = await asyncio.to_thread(_samples, port)
        health = await asyncio.to_thread(_get, port, "/healthz")
    inbound = {"direction": "inbound"}
    for address, tag, count in ((support, "authenticated", 3), (forward, "unauthenticated", 2)):
        for outcome in ("accepted", "delivered"):
            labels = {**inbound, "address": address, "tag": tag, "outcome": outcome}
            assert _value(samples, "smtpconn_messages_total", **labels) == count, (labels, samples)
    assert _value(samples, "smtpconn_sessions_total", listener="inbound") == 6
    assert _value(samples, "smtpconn_auth_failures_total", listener="inbound") == 1
    assert _value(samples, "smtpconn_sink_delivery_seconds_count") == 5
    assert _value(samples, "smtpconn_queue_depth", direction="inbound") == 0
    assert _value(samples, "smtpconn_queue_oldest_age_seconds", direction="outbound") == 0
    expiry = [
        v for (name, _), v in samples.items() if name == "smtpconn_tls_certificate_expiry_seconds"
    ]
    assert len(expiry) == 1 and expiry[0] > 0
    assert health == (200, b"ok\n")


async def test_readyz_follows_the_sink(
    relay_env: RelayEnv,
    webhook: type[_Hook],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET)
    webhook.answers[:] = [500, 500]
    url = f"http://127.0.0.1:{webhook.port}/mail"  # type: ignore[attr-defined]
    _enable_metrics(
        relay_env, {"kind": "webhook", "url": url, "secret": f"env:{WEBHOOK_SECRET_ENV}"}
    )
    async with started_relay(relay_env, poll=0.1) as relay:
        port = relay.metrics_port
        assert port
        assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200
        token = f"ready-{uuid.uuid4().hex}"
        await asyncio.to_thread(
            _forward, relay.inbound_port, relay_env.addresses["outbound-only"], token
        )
        await _until(lambda: len(webhook.requests) >= 1, "the first (failed) hand-over")
        status, body = await asyncio.to_thread(_get, port, "/readyz")
        assert status == 503, body
        document = json.loads(body)
        assert document["ready"] is False and any(
            "sink" in r and "500" in r for r in document["reasons"]
        )
        await _until(lambda: any(r[0] == 200 for r in webhook.requests), "the webhook's 200", 20)
        status, body = await asyncio.to_thread(_get, port, "/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "reasons": []}
