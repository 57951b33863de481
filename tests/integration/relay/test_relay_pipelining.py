"""The outbound client against the lab Postfix: PIPELINING (RFC 2920) when the server offers it
(MAIL, the RCPTs and DATA in one write, every reply judged against its own command), lock-step
when it does not; no RSET right after a delivered message, RSET after a failed transaction or
an idle second; a connection that died unnoticed is replaced without costing the message a
retry."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator

import pytest

from lab.lab import Lab
from lab.postfix import SEND_AS_DENIED, SEND_AS_DENIED_RCPT, SEND_AS_DENIED_REPLY
from smtpconn.smtp import delivery
from smtpconn.smtp.delivery import DeliveryResult, DeliverySession
from smtpconn.smtp.failures import StageName
from smtpconn.smtp.session import ServerSpec, secure_client_context
from smtpconn.smtp.vocab import AuthMechanism, Security

from .test_relay_outbound import reply

BOB = "bob@good.test"
ALICE = "alice@good.test"
REFUSED = SEND_AS_DENIED_RCPT  # the lab Postfix refuses it at RCPT (550 5.7.60)


def _session(lab: Lab, port_name: str = "submission", port: int | None = None) -> DeliverySession:
    spec = ServerSpec(
        lab.server_name,
        port if port is not None else lab.ports[port_name],
        Security.STARTTLS,
        AuthMechanism.AUTO,
        lab.user.username,
    )
    return DeliverySession(
        spec,
        lab.user.password,
        tls_context=secure_client_context(lab.ca_file),
        ehlo_name="relay.helpdesk.test",
        timeout=10,
        address="127.0.0.1",
    )


def _message(to: str, token: str) -> bytes:
    return reply("support@good.test", to, token).as_bytes()


def _client_lines_before_first_reply(result: DeliveryResult) -> list[str]:
    """What the client wrote of the transaction before it read the first reply of it."""
    lines = result.transcript
    start = next(i for i, line in enumerate(lines) if line.startswith("C: MAIL"))
    out = []
    for line in lines[start:]:
        if line.startswith("S: "):
            break
        out.append(line.split(":", 2)[1].strip().split(" ")[0])
    return out


def _stages(result: DeliveryResult) -> list[str]:
    return [s.stage for s in result.stages]


async def test_pipelined_group_and_no_rset_between_delivered_messages(lab: Lab) -> None:
    session = _session(lab)
    tokens = [f"pipe-{uuid.uuid4().hex}" for _ in range(3)]
    try:
        results = [await session.send(lab.user.username, [BOB], _message(BOB, t)) for t in tokens]
    finally:
        await session.close()
    assert all(r.delivered for r in results), [r.failure for r in results]
    for result in results:
        # MAIL, RCPT and DATA went out before any reply was read: one round trip.
        assert _client_lines_before_first_reply(result) == ["MAIL", "RCPT", "DATA"]
    first, *rest = (_stages(r) for r in results)
    assert StageName.AUTH in first
    for stages in rest:  # back to back: no TLS, no AUTH, no RSET
        assert stages[0] == StageName.MAIL and StageName.RSET not in stages
        assert StageName.AUTH not in stages
    for t in tokens:
        found = await asyncio.to_thread(lab.find_message, t, BOB)
        assert found.raw.count(t.encode()) >= 1


async def test_without_pipelining_the_client_goes_lock_step(lab: Lab) -> None:
    session = _session(lab, "no_pipelining")
    token = f"lockstep-{uuid.uuid4().hex}"
    try:
        result = await session.send(lab.user.username, [BOB, ALICE], _message(BOB, token))
    finally:
        await session.close()
    assert result.delivered, result.failure
    assert _client_lines_before_first_reply(result) == ["MAIL"]
    lines = result.transcript
    start = next(i for i, line in enumerate(lines) if line.startswith("C: MAIL"))
    end = next(i for i, line in enumerate(lines) if line.startswith("C: <message"))
    # Each command waits for its reply: C, S, C, S ... for MAIL, RCPT, RCPT and DATA.
    assert [line[:2] for line in lines[start:end]] == ["C:", "S:"] * 4
    await asyncio.to_thread(lab.find_message, token, ALICE)


async def test_partial_refusal_in_a_pipelined_group_maps_each_reply_to_its_recipient(
    lab: Lab,
) -> None:
    session = _session(lab)
    token = f"partial-{uuid.uuid4().hex}"
    try:
        result = await session.send(lab.user.username, [BOB, REFUSED, ALICE], _message(BOB, token))
        after = await session.send(lab.user.username, [BOB], _message(BOB, token + "-next"))
    finally:
        await session.close()
    assert _client_lines_before_first_reply(result) == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]
    outcomes = {o.recipient: o for o in result.recipients}
    assert outcomes[BOB].accepted and outcomes[ALICE].accepted
    refused = outcomes[REFUSED]
    assert not refused.accepted and refused.permanent and refused.code == 550
    assert "5.7.60" in refused.text
    assert result.queue_id is not None and not result.delivered
    assert after.delivered and _stages(after)[0] == StageName.MAIL  # the transaction completed
    for rcpt in (BOB, ALICE):
        await asyncio.to_thread(lab.find_message, token, rcpt)
    assert not any(token.encode() in m.raw for m in lab.messages(REFUSED))


async def test_all_recipients_refused_sends_no_message_and_resets_before_the_next(
    lab: Lab,
) -> None:
    session = _session(lab)
    token = f"none-{uuid.uuid4().hex}"
    try:
        result = await session.send(lab.user.username, [REFUSED], _message(REFUSED, token))
        after = await session.send(lab.user.username, [BOB], _message(BOB, token + "-next"))
    finally:
        await session.close()
    [refused] = result.recipients
    assert not refused.accepted and refused.permanent and refused.code == 550
    assert not any("<message" in line for line in result.transcript)  # DATA refused, no body
    assert after.delivered and _stages(after)[0] == StageName.RSET  # failed: reset first
    await asyncio.to_thread(lab.find_message, token + "-next", BOB)


async def test_a_refused_mail_in_the_group_fails_every_recipient_with_its_reply(
    lab: Lab,
) -> None:
    session = _session(lab, "early_reject")
    token = f"mailrefused-{uuid.uuid4().hex}"
    try:
        result = await session.send(SEND_AS_DENIED, [BOB, ALICE], _message(BOB, token))
        after = await session.send(lab.user.username, [BOB], _message(BOB, token + "-next"))
    finally:
        await session.close()
    assert _client_lines_before_first_reply(result) == ["MAIL", "RCPT", "RCPT", "DATA"]
    assert result.failure is not None and result.failure.stage is StageName.MAIL
    code = int(SEND_AS_DENIED_REPLY.split()[0])
    for outcome in result.recipients:  # the MAIL reply, not the 503s that followed it
        assert not outcome.accepted and outcome.permanent and outcome.code == code
    assert not any("<message" in line for line in result.transcript)
    assert after.delivered and _stages(after)[0] == StageName.RSET
    await asyncio.to_thread(lab.find_message, token + "-next", BOB)
    assert not any(token.encode() + b"\n" in m.raw for m in lab.messages(ALICE))


async def test_an_idle_connection_is_probed_with_rset(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "PROBE_AFTER", 0.05)
    session = _session(lab)
    try:
        first = await session.send(lab.user.username, [BOB], _message(BOB, "probe-1"))
        await asyncio.sleep(0.1)
        second = await session.send(lab.user.username, [BOB], _message(BOB, "probe-2"))
    finally:
        await session.close()
    assert first.delivered and second.delivered
    assert _stages(second)[0] == StageName.RSET and StageName.AUTH not in _stages(second)


class _CuttableProxy:
    """A TCP forwarder in front of the lab Postfix in its own thread, standing for a NAT box
    or firewall that forgets an idle connection: ``cut()`` closes every connection it carries
    (the client learns it only when it next reads); new connections still go through."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._writers: list[asyncio.StreamWriter] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers += [writer, up_w]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def cut(self) -> None:
        async def close_all() -> None:
            for writer in self._writers:
                writer.transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)

    def stop(self) -> None:
        self.cut()
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def _cuttable(upstream: int) -> Iterator[_CuttableProxy]:
    proxy = _CuttableProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_a_connection_cut_unnoticed_costs_the_message_nothing(lab: Lab) -> None:
    with _cuttable(lab.ports["submission"]) as proxy:
        session = _session(lab, port=proxy.port)
        token = f"stale-{uuid.uuid4().hex}"
        try:
            first = await session.send(lab.user.username, [BOB], _message(BOB, token + "-1"))
            assert first.delivered and proxy.connections == 1
            # Cut while this loop is not looking: the next send finds the connection
            # seemingly fine (no RSET within the second) and learns otherwise at MAIL.
            proxy.cut()
            second = await session.send(lab.user.username, [BOB], _message(BOB, token + "-2"))
        finally:
            await session.close()
    assert second.delivered, second.failure
    assert proxy.connections == 2  # the message went on a fresh connection, at once
    assert StageName.AUTH in _stages(second) and second.failure is None
    found = await asyncio.to_thread(lab.find_message, token + "-2", BOB)
    assert found is not None
    await asyncio.sleep(0.5)
    copies = [m for m in lab.messages(BOB) if (token + "-2").encode() in m.raw]
    assert len(copies) == 1  # delivered once
