"""Delivering messages over the policy of ``smtp.session``: one message (``deliver``) or several
over one connection (``DeliverySession``), with an outcome per recipient.

``await deliver(server, secret, mail_from, rcpt_to, message, *, tls_context, ehlo_name,
timeout, address=None, transcript=None) -> DeliveryResult``
    Deliver one message. ``DeliveryResult.recipients`` holds one ``RecipientOutcome`` per
    recipient (accepted, or failed permanently / temporarily with the reply); ``queue_id`` is read
    from the final 250. Classification: a 5xx reply to MAIL, RCPT or DATA is permanent; 4xx,
    timeouts, lost connections, and every failure before MAIL (connect, TLS, certificate, AUTH)
    are temporary, because they concern the connector's set-up rather than the message and a
    bounce would lose mail that a fixed set-up can deliver.

``DeliverySession(server, secret, *, tls_context, ehlo_name, timeout, address=None,
transcript=None)``
    Several messages over one connection: ``await send(mail_from, rcpt_to, message) ->
    DeliveryResult`` (classified like ``deliver``; TLS + AUTH on the first, ``RSET`` only after
    a failed transaction or an idle second, a fresh connection when the old one went stale),
    ``connected``, ``messages``, ``last_used``, ``await close()``. With a server that offers
    PIPELINING (RFC 2920) both send MAIL, the RCPTs and DATA in one write.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from smtpconn.smtp.failures import FailureKind, SmtpFailure, StageName, StageRecord
from smtpconn.smtp.replies import Reply, parse_queue_id
from smtpconn.smtp.session import (
    ServerSpec,
    SmtpSession,
    TlsInfo,
    Transcript,
    establish,
    login,
    needs_smtputf8,
)


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    recipient: str
    accepted: bool  # the server took responsibility for this recipient
    permanent: bool  # for a failure: bounce (True) or retry later (False)
    code: int | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "accepted": self.accepted,
            "permanent": self.permanent,
            "code": self.code,
            "reply": self.text,
        }


@dataclass
class DeliveryResult:
    recipients: list[RecipientOutcome]
    stages: list[StageRecord]
    transcript: list[str]
    queue_id: str | None = None
    failure: SmtpFailure | None = None
    tls: TlsInfo | None = None
    peer_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delivered(self) -> bool:
        return bool(self.recipients) and all(r.accepted for r in self.recipients)

    @property
    def accepted(self) -> list[str]:
        return [r.recipient for r in self.recipients if r.accepted]


async def deliver(
    server: ServerSpec,
    secret: str,
    mail_from: str,
    rcpt_to: list[str],
    message: bytes,
    *,
    tls_context: ssl.SSLContext,
    ehlo_name: str,
    timeout: float,
    address: str | None = None,
    transcript: Transcript | None = None,
    smtputf8: bool = False,
) -> DeliveryResult:
    """Deliver one message through ``server`` with TLS + AUTH. Never raises ``SmtpFailure``:
    the outcome of every recipient is in the result. ``smtputf8``: the message came with
    SMTPUTF8 (see :func:`needs_smtputf8`)."""
    session = SmtpSession(
        server.host,
        server.port,
        tls_context=tls_context,
        ehlo_name=ehlo_name,
        timeout=timeout,
        address=address,
        transcript=transcript,
    )
    result = DeliveryResult([], session.stages, session.transcript_lines)
    try:
        await _secure_login(session, server, secret, result)
        await _transaction(session, mail_from, rcpt_to, message, result, smtputf8=smtputf8)
        await session.quit()
    except SmtpFailure as failure:
        _fail_undecided(result, rcpt_to, failure)
        await session.quit()
    finally:
        session.close()
        result.peer_address = session.peer_address
    return result


async def _secure_login(
    session: SmtpSession, server: ServerSpec, secret: str, result: DeliveryResult
) -> None:
    """Connect, encrypt and authenticate per the policy, or raise ``SmtpFailure``."""
    await establish(session, server.security)
    result.tls = session.tls
    if session.tls is not None and not session.tls.version_ok:
        raise SmtpFailure(
            StageName.TLS,
            FailureKind.TLS_TOO_OLD,
            f"{session.target} negotiated {session.tls.version}; smtpconn needs TLS 1.2+",
        )
    await login(session, server, secret)


async def _transaction(
    session: SmtpSession,
    mail_from: str,
    rcpt_to: list[str],
    message: bytes,
    result: DeliveryResult,
    *,
    smtputf8: bool,
) -> None:
    """MAIL, RCPT for each recipient, DATA when any was accepted; outcomes go to ``result``.
    With a server that offers PIPELINING, MAIL, the RCPTs and DATA go in one write and the
    replies are judged in order, exactly as one by one; else one command per round trip."""
    utf8 = needs_smtputf8(mail_from, rcpt_to, declared=smtputf8)
    if session.pipelining:
        await _pipelined(session, mail_from, rcpt_to, message, result, smtputf8=utf8)
        return
    await session.mail(mail_from, smtputf8=utf8)
    pending: list[str] = []
    for recipient in rcpt_to:
        _judge_rcpt(recipient, await session.rcpt(recipient), pending, result)
    if pending:
        _accepted(pending, await session.data(message), result)


async def _pipelined(
    session: SmtpSession,
    mail_from: str,
    rcpt_to: list[str],
    message: bytes,
    result: DeliveryResult,
    *,
    smtputf8: bool,
) -> None:
    """RFC 2920 §3.1: every reply of the group is checked, DATA's too: a DATA the server
    accepted although no recipient was gets a lone dot, never the message."""
    started = time.monotonic()
    read: list[Reply] = []  # filled as the replies come: a break mid-group keeps the verdicts
    pending: list[str] = []
    try:
        replies = await session.envelope(mail_from, rcpt_to, smtputf8=smtputf8, read=read)
    finally:
        # After a refused MAIL the RCPT replies say nothing about the recipients (503s, or
        # anything a broken server invents): the MAIL failure decides for every one.
        if read and read[0].code == 250:
            for recipient, reply in zip(rcpt_to, read[1:], strict=False):
                _judge_rcpt(recipient, reply, pending, result)
    if replies.data.code != 354:
        if pending:
            raise session.data_refused(replies.data, started)
        return  # no recipient: the DATA refusal is the expected one
    if not pending:
        await session.empty_body()
        return
    _accepted(pending, await session.body(message, started), result)


def _judge_rcpt(recipient: str, reply: Reply, pending: list[str], result: DeliveryResult) -> None:
    """An accepted recipient waits in ``pending`` for DATA; a refused one gets its outcome."""
    if reply.code in (250, 251):
        pending.append(recipient)
    else:
        result.recipients.append(
            RecipientOutcome(recipient, False, reply.permanent, reply.code, reply.text)
        )


def _accepted(pending: list[str], reply: Reply, result: DeliveryResult) -> None:
    result.queue_id = parse_queue_id(reply)
    result.recipients.extend(
        RecipientOutcome(r, True, False, reply.code, reply.text) for r in pending
    )


def _stale(failure: SmtpFailure | None) -> bool:
    """The connection was dead before the transaction: it broke without any reply to MAIL.
    (A 421 to MAIL is not taken for staleness: within a second of the last delivery it is far
    more likely the server's throttle, which the lane must see, than an idle timeout, whose 421
    arrives while idle and retires the connection before anything is sent.)"""
    return (
        failure is not None
        and failure.stage is StageName.MAIL
        and failure.kind is FailureKind.CLOSED
        and failure.reply is None
    )


def _fail_undecided(result: DeliveryResult, rcpt_to: list[str], failure: SmtpFailure) -> None:
    """Every recipient without an outcome yet fails with ``failure``: permanently only for a
    5xx to MAIL or DATA (see ``deliver``)."""
    result.failure = failure
    decided = {r.recipient for r in result.recipients}
    permanent = failure.permanent and failure.stage in (StageName.MAIL, StageName.DATA)
    for recipient in rcpt_to:
        if recipient not in decided:
            result.recipients.append(
                RecipientOutcome(
                    recipient,
                    False,
                    permanent,
                    failure.reply.code if failure.reply else None,
                    failure.message,
                )
            )


# A kept connection idle longer than this gets an RSET before its next transaction: a cheap
# check that it still works, where a dead one is found before anything of the message is sent.
PROBE_AFTER = 1.0


class DeliverySession:
    """Several messages to one server over one connection: TLS and AUTH once (what MTAs'
    connection caches do; a new TLS + AUTH session per message was most of the relay's outbound
    cost).

    The policy is the one of :func:`deliver`, which this mirrors message by message: the
    connection is encrypted and authenticated before any MAIL, and each :meth:`send` returns a
    ``DeliveryResult`` classified exactly like ``deliver``'s (it never raises ``SmtpFailure``).
    The connection is opened by the first :meth:`send`. Between messages: nothing after a
    delivered message when the next follows within ``PROBE_AFTER`` seconds; ``RSET`` after a
    failed or abandoned transaction, and as a probe after a longer idle time. When a later send
    finds the connection closed or out of step (bytes nobody asked for), its ``RSET`` fails, or
    an unprobed connection breaks before any reply to MAIL, a fresh one is opened for that
    message: nothing of it was delivered, so a stale connection never costs a message a retry.
    After a failure that broke the connection the next send reconnects; a refused message
    (5xx/4xx reply) leaves it usable. ``close()`` says QUIT. Not safe for concurrent sends: one
    message at a time.
    """

    def __init__(
        self,
        server: ServerSpec,
        secret: str,
        *,
        tls_context: ssl.SSLContext,
        ehlo_name: str,
        timeout: float,
        address: str | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        self.server = server
        self._secret = secret
        self._tls_context = tls_context
        self._ehlo_name = ehlo_name
        self._timeout = timeout
        self.address = address
        self._transcript = transcript
        self._session: SmtpSession | None = None
        self.messages = 0  # transactions on the current connection
        self.last_used = time.monotonic()
        self._clean = False  # the last transaction ended with the 250 to its message

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.usable

    def _new_session(self) -> SmtpSession:
        return SmtpSession(
            self.server.host,
            self.server.port,
            tls_context=self._tls_context,
            ehlo_name=self._ehlo_name,
            timeout=self._timeout,
            address=self.address,
            transcript=self._transcript,
        )

    async def _drop(self) -> None:
        if self._session is not None:
            await self._session.quit()
            self._session = None
        self.messages = 0

    async def send(
        self, mail_from: str, rcpt_to: list[str], message: bytes, *, smtputf8: bool = False
    ) -> DeliveryResult:
        unprobed = await self._ready()
        result = await self._attempt(mail_from, rcpt_to, message, smtputf8)
        if unprobed and _stale(result.failure):
            # The server (or a box on the path) dropped the connection since the last
            # message: nothing of this one was delivered, so it goes on a fresh connection.
            await self._drop()
            result = await self._attempt(mail_from, rcpt_to, message, smtputf8)
        return result

    async def _ready(self) -> bool:
        """Make the kept connection ready for a transaction, or drop it. True when it is used
        without an ``RSET``: the last transaction ended with its 250 (the server has reset
        itself, RFC 5321 §4.1.1.4) less than ``PROBE_AFTER`` seconds ago. After a failed or
        abandoned transaction ``RSET`` resets it; after a longer idle time ``RSET`` also probes
        it (Postfix's SMTP client likewise probes a connection taken from its cache)."""
        session = self._session
        if session is None:
            return False
        if not session.usable:  # closed, or it sent something we did not ask for
            await self._drop()
            return False
        if self._clean and time.monotonic() - self.last_used <= PROBE_AFTER:
            return True
        try:
            await session.rset()
        except SmtpFailure:
            await self._drop()  # stale: nothing of this message was sent on it
        return False

    async def _attempt(
        self, mail_from: str, rcpt_to: list[str], message: bytes, smtputf8: bool
    ) -> DeliveryResult:
        result = DeliveryResult([], [], [])
        session = self._session or self._new_session()
        self._clean = False
        try:
            if self._session is None:
                # Only a connection that got through TLS *and* AUTH is kept for the next
                # message: MAIL on a half-set-up one would be refused and bounce the mail.
                await _secure_login(session, self.server, self._secret, result)
                self._session = session
            result.tls = session.tls
            self.messages += 1
            await _transaction(session, mail_from, rcpt_to, message, result, smtputf8=smtputf8)
            self._clean = any(r.accepted for r in result.recipients)  # only after a 250
        except SmtpFailure as failure:
            _fail_undecided(result, rcpt_to, failure)
        except BaseException:
            session.close()
            self._session = None
            self.messages = 0
            raise
        finally:
            result.stages = list(session.stages)
            result.transcript = list(session.transcript_lines)
            result.peer_address = session.peer_address
            # This message's records only; a long-lived connection must not grow them.
            session.stages.clear()
            session.transcript_lines.clear()
            self.last_used = time.monotonic()
        if self._session is None:
            await session.quit()  # set-up failed: say goodbye, keep nothing
        elif not session.usable:
            await self._drop()
        return result

    async def close(self) -> None:
        """QUIT (politely; a server that already hung up is fine)."""
        await self._drop()
