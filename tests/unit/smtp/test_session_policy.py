"""The client policy, against a scripted server: nothing secret or mail-like in clear text."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from smtpconn.smtp.delivery import deliver
from smtpconn.smtp.failures import FailureKind, PolicyError, StageName
from smtpconn.smtp.session import ServerSpec, SmtpSession, dot_stuff, secure_client_context
from smtpconn.smtp.vocab import AuthMechanism, Security

from .conftest import FakeServer, Script

PASSWORD = "s3cret-Pa55word"
Start = Callable[[Script], Awaitable[FakeServer]]


def _server(port: int, security: Security = Security.STARTTLS) -> ServerSpec:
    return ServerSpec(
        host="fake.test",
        port=port,
        security=security,
        auth=AuthMechanism.AUTO,
        username="user@fake.test",
    )


async def _deliver(fake: FakeServer, rcpts: list[str] | None = None):  # type: ignore[no-untyped-def]
    return await deliver(
        _server(fake.port),
        PASSWORD,
        "user@fake.test",
        rcpts or ["a@example.test"],
        b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n",
        tls_context=secure_client_context(fake.ca_file),
        ehlo_name="client.test",
        timeout=5,
        address="127.0.0.1",
    )


def _no_secret(lines: list[str]) -> None:
    encoded = base64.b64encode(b"\0user@fake.test\0" + PASSWORD.encode()).decode()
    for line in lines:
        assert PASSWORD not in line
        assert encoded not in line


async def test_good_delivery(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script())
    result = await _deliver(fake)
    assert result.delivered, result.failure
    assert result.queue_id == "ABC123"
    assert [s.stage for s in result.stages] == [
        "connect", "banner", "ehlo", "starttls", "tls", "ehlo", "auth", "mail", "rcpt", "data", "quit",
    ]  # fmt: skip
    assert result.tls is not None and result.tls.version_ok and result.tls.verified
    # the session refuses secrets before TLS: the first command after STARTTLS is a fresh EHLO
    assert fake.received[:3] == ["EHLO client.test", "STARTTLS", "EHLO client.test"]
    # the fake server keeps the raw wire form: the leading dot was doubled (RFC 5321 §4.5.2)
    assert b"\r\n..leading dot\r\n" in fake.messages[0]
    _no_secret(result.transcript)
    assert any("AUTH PLAIN <redacted>" in line for line in result.transcript)


async def test_no_starttls_is_refused_before_any_auth(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script(starttls=False, auth_before_tls=True))
    result = await _deliver(fake)
    assert not result.delivered
    assert result.failure is not None and result.failure.kind is FailureKind.NO_STARTTLS
    assert "strips STARTTLS" in result.failure.message
    assert not any(
        line.upper().startswith(("AUTH", "MAIL", "RCPT", "DATA")) for line in fake.received
    )
    assert all(not r.permanent for r in result.recipients)  # a set-up problem: retry, not bounce


async def test_banner_421_is_explained(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script(banner="421 4.7.0 too many connections"))
    result = await _deliver(fake)
    assert result.failure is not None
    assert result.failure.kind is FailureKind.BANNER_REJECTED
    assert result.failure.stage is StageName.BANNER
    assert "too many connections" in result.failure.message


async def test_auth_failure_names_the_stage_and_reply(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script(auth_ok=False))
    result = await _deliver(fake)
    assert result.failure is not None and result.failure.kind is FailureKind.AUTH_FAILED
    assert result.failure.reply is not None and result.failure.reply.code == 535
    _no_secret(result.transcript)
    assert not any(line.startswith("MAIL") for line in fake.received)


async def test_per_recipient_outcomes(fake_smtp: Start) -> None:
    fake = await fake_smtp(
        Script(
            rcpt_replies={
                "gone@example.test": "550 5.1.1 no such user",
                "later@example.test": "450 busy",
            }
        )
    )
    result = await _deliver(fake, ["a@example.test", "gone@example.test", "later@example.test"])
    by = {r.recipient: r for r in result.recipients}
    assert by["a@example.test"].accepted
    assert not by["gone@example.test"].accepted and by["gone@example.test"].permanent
    assert not by["later@example.test"].accepted and not by["later@example.test"].permanent
    assert result.queue_id == "ABC123"


async def test_refused_connection() -> None:
    result = await deliver(
        _server(1),
        PASSWORD,
        "user@fake.test",
        ["a@example.test"],
        b"x",
        tls_context=secure_client_context(None),
        ehlo_name="client.test",
        timeout=5,
        address="127.0.0.1",
    )
    assert result.failure is not None and result.failure.kind is FailureKind.REFUSED
    assert result.failure.could_not_connect


async def test_untrusted_certificate_is_a_certificate_failure(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script())
    result = await deliver(
        _server(fake.port),
        PASSWORD,
        "user@fake.test",
        ["a@example.test"],
        b"x",
        tls_context=secure_client_context(None),  # system store only: the fake CA is unknown
        ehlo_name="client.test",
        timeout=5,
        address="127.0.0.1",
    )
    assert result.failure is not None and result.failure.kind is FailureKind.CERTIFICATE
    assert not any(line.startswith("AUTH") for line in fake.received)


async def test_session_refuses_auth_and_mail_in_clear(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script(auth_before_tls=True))
    session = SmtpSession(
        "fake.test", fake.port, tls_context=secure_client_context(None), ehlo_name="c.test",
        timeout=5, address="127.0.0.1",
    )  # fmt: skip
    await session.open()
    ext = await session.ehlo()
    assert ext.auth_offered
    with pytest.raises(PolicyError):
        await session.authenticate("PLAIN", "u", PASSWORD)
    with pytest.raises(PolicyError):
        await session.mail("u@fake.test")
    await session.quit()
    assert not any(line.startswith(("AUTH", "MAIL")) for line in fake.received)


async def test_replies_injected_after_starttls_220_abandon_the_session(fake_smtp: Start) -> None:
    injected = "\r\n250-fake.test\r\n250 AUTH PLAIN\r\n235 ok\r\n250 ok\r\n250 ok\r\n354 go"
    injected += "\r\n250 2.0.0 Ok: queued as INJECTED"
    fake = await fake_smtp(Script(after_starttls=injected))
    result = await _deliver(fake)
    assert not result.delivered and result.queue_id is None
    failure = result.failure
    assert failure is not None and failure.kind is FailureKind.STARTTLS_INJECTION
    assert failure.stage is StageName.STARTTLS
    assert "possible STARTTLS injection by a middlebox" in failure.message
    assert all(not r.permanent for r in result.recipients)  # deferred, never bounced
    # nothing after STARTTLS: no EHLO, AUTH or mail went out, not even a QUIT
    assert fake.received == ["EHLO client.test", "STARTTLS"]
    assert not any(s.stage in ("tls", "auth", "mail") for s in result.stages)
    _no_secret(result.transcript)


def test_dot_stuffing() -> None:
    assert dot_stuff(b"a\n.b\r\n..c\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuff(b"no newline") == b"no newline\r\n.\r\n"


ERROR_CHALLENGE = base64.b64encode(
    b'{"status":"invalid_token","scope":"smtp","openid-configuration":"https://x.test/"}'
).decode()


@pytest.mark.parametrize(
    ("configured", "offered", "sent", "finish"),
    [
        (AuthMechanism.XOAUTH2, "PLAIN OAUTHBEARER", "OAUTHBEARER", "AQ=="),
        (AuthMechanism.OAUTHBEARER, "XOAUTH2 OAUTHBEARER", "OAUTHBEARER", "AQ=="),
        (AuthMechanism.XOAUTH2, "XOAUTH2 OAUTHBEARER", "XOAUTH2", ""),
    ],
)
async def test_bearer_token_mechanism_and_its_error_challenge(
    fake_smtp: Start, configured: AuthMechanism, offered: str, sent: str, finish: str
) -> None:
    """The token goes as the mechanism chosen; the server's 334 error challenge is answered as
    that mechanism requires (RFC 7628 3.2.3: a single ^A), its JSON kept in the refusal, and
    the token is in no transcript line."""
    fake = await fake_smtp(Script(auth_mechanisms=offered, auth_challenge=ERROR_CHALLENGE))
    server = ServerSpec("fake.test", fake.port, Security.STARTTLS, configured, "user@fake.test")
    transcript: list[str] = []
    session = SmtpSession(
        server.host,
        server.port,
        tls_context=secure_client_context(fake.ca_file),
        ehlo_name="client.test",
        timeout=5,
        address="127.0.0.1",
        transcript=transcript.append,
    )
    from smtpconn.smtp.failures import SmtpFailure
    from smtpconn.smtp.session import establish, login

    await establish(session, Security.STARTTLS)
    with pytest.raises(SmtpFailure) as refused:
        await login(session, server, "the-bearer-token")
    await session.quit()
    auth = next(line for line in fake.received if line.startswith("AUTH "))
    assert auth.split(" ")[1] == sent
    payload = base64.b64decode(auth.split(" ")[2])
    assert b"auth=Bearer the-bearer-token\x01\x01" in payload
    if sent == "OAUTHBEARER":
        assert payload.startswith(b"n,a=user@fake.test,\x01host=fake.test\x01port=")
    assert fake.received[fake.received.index(auth) + 1] == finish
    assert refused.value.reply is not None and refused.value.reply.code == 535
    assert "invalid_token" in str(refused.value.reply)
    for line in transcript:
        assert "the-bearer-token" not in line and auth.split(" ")[2] not in line


async def test_quit_without_waiting_sends_quit_and_closes(fake_smtp: Start) -> None:
    fake = await fake_smtp(Script())
    session = SmtpSession(
        "fake.test", fake.port, tls_context=secure_client_context(None), ehlo_name="c.test",
        timeout=5, address="127.0.0.1",
    )  # fmt: skip
    await session.open()
    await session.ehlo()
    await session.quit(wait=False)
    assert not session.usable
    assert session.transcript_lines[-1] == "C: QUIT"  # sent; the 221 is not waited for
    for _ in range(100):
        if "QUIT" in fake.received:
            break
        await asyncio.sleep(0.01)
    assert "QUIT" in fake.received


def _dot_stuff_by_lines(message: bytes) -> bytes:
    """The line-by-line definition dot_stuff's byte scans must equal."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return body + b".\r\n"


def test_dot_stuffing_equals_the_line_by_line_definition() -> None:
    import itertools
    import random

    pieces = [b"", b".", b"..", b"a", b"\r", b"\n", b"\r\n", b" .", b"x.y"]
    cases = [b"".join(p) for n in range(4) for p in itertools.product(pieces, repeat=n)]
    rng = random.Random(16)
    cases += [bytes(rng.choice(b".\r\na ") for _ in range(rng.randrange(60))) for _ in range(2000)]
    for case in cases:
        assert dot_stuff(case) == _dot_stuff_by_lines(case), case
