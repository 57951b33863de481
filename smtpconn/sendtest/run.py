"""``send-test``: one test message, outbound, inbound or round trip, and a report of each stage.

* outbound: through the customer's server exactly as the relay sends (``delivery.deliver``).
* inbound: to the relay's inbound listener, as the customer's server would (TLS + AUTH with the
  inbound credentials for bidirectional, plain forwarding for outbound-only), then read back
  from the relay's Maildir sink to confirm it arrived and was tagged.
* roundtrip: outbound to the support address itself, then wait for it in the relay's sink and
  report what the received copy proves (sending address, SPF, DKIM, DMARC).

Reading the copy back needs the relay's Maildir sink on this machine (send-test runs where the
relay runs). With another sink kind an inbound test reports the relay's acceptance and says the
tag could not be checked; a round trip cannot be confirmed at all and is refused up front.

Certificates are checked on every leg, forwarding included (``--insecure`` turns that off), so a
relay certificate the customer's server would reject shows up here first.

Exit codes are those of every command (``errors.ExitCode``): 0 delivered (and received), 1 refused or not arrived in time,
3 could not connect at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpconn.addresses import MailAddress, parse_host_port
from smtpconn.dns.resolvers import resolve_host
from smtpconn.errors import CouldNotRun, ExitCode, UsageError
from smtpconn.oauth.errors import OAuthFailure
from smtpconn.profile.credentials import outbound_credential
from smtpconn.profile.model import (
    Mode,
    OutboundServer,
    Profile,
    SinkKind,
    SupportAddress,
    Workflow,
)
from smtpconn.profile.wire import load_dkim_key, server_spec
from smtpconn.sendtest.received import MaildirWatch, describe_received, verify_dkim
from smtpconn.sendtest.testmessage import TestMessage, build_test_message
from smtpconn.settings import Settings
from smtpconn.smtp import reply_catalogue
from smtpconn.smtp.delivery import DeliveryResult, RecipientOutcome, deliver
from smtpconn.smtp.failures import SmtpFailure, StageName
from smtpconn.smtp.replies import Reply, parse_queue_id
from smtpconn.smtp.reply_catalogue import Stage
from smtpconn.smtp.session import (
    ServerSpec,
    SmtpSession,
    Transcript,
    establish,
    secure_client_context,
)
from smtpconn.smtp.vocab import AuthMechanism, Security

POLL_INTERVAL = 0.1  # seconds between looks into the sink while waiting for the message


@dataclass
class SendTestReport:
    direction: str
    address: str
    recipient: str
    token: str
    message_id: str
    dkim_signed: bool
    insecure: bool
    delivery: DeliveryResult | None = None
    received: dict[str, Any] | None = None
    problem: str = ""  # why it failed, naming the stage
    fix: str = ""  # what to change, when the reply-code catalogue knows the server's answer
    exit_code: ExitCode = ExitCode.OK
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)  # wall clock: the sink's files use it

    def to_json(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "direction": self.direction,
            "address": self.address,
            "recipient": self.recipient,
            "token": self.token,
            "message_id": self.message_id,
            "dkim_signed": self.dkim_signed,
            "insecure": self.insecure,
            "ok": self.exit_code is ExitCode.OK,
            "accepted": bool(d and d.failure is None and d.delivered),
            "exit_code": int(self.exit_code),
            "problem": self.problem or None,
            "fix": self.fix or None,
            "stages": [s.to_json() for s in d.stages] if d else [],
            "queue_id": d.queue_id if d else None,
            "tls": d.tls.to_json() if d and d.tls else None,
            "server_address": d.peer_address if d else None,
            "failure": d.failure.to_json() if d and d.failure else None,
            "recipients": [r.to_json() for r in d.recipients] if d else [],
            "received": self.received,
            "notes": self.notes,
        }


def _ehlo_name(profile: Profile) -> str:
    return profile.connector.ehlo_name or socket.getfqdn() or "localhost"


def _failure_report(report: SendTestReport, result: DeliveryResult) -> None:
    failure = result.failure
    if failure is not None:
        report.problem = f"{failure.stage.value} stage: {failure.message}"
        report.exit_code = (
            ExitCode.COULD_NOT_RUN if failure.could_not_connect else ExitCode.CHECK_FAILED
        )
        if failure.reply is not None:
            _explain(report, failure.reply, _CATALOGUE_STAGE.get(failure.stage, Stage.ANY))
        return
    refused = [r for r in result.recipients if not r.accepted]
    if refused:
        r = refused[0]
        report.problem = f"rcpt stage: {r.recipient} refused: {r.code} {r.text}"
        report.exit_code = ExitCode.CHECK_FAILED
        if r.code is not None:
            _explain(report, Reply(r.code, (r.text,)), Stage.ANY)


_CATALOGUE_STAGE = {StageName.AUTH: Stage.AUTH, StageName.STARTTLS: Stage.STARTTLS}


def _explain(report: SendTestReport, reply: Reply, stage: Stage) -> None:
    meaning = reply_catalogue.explain(reply, stage)
    if meaning is not None:
        report.problem += f" ({meaning.provider}: {meaning.cause})"
        report.fix = meaning.fix


def _credential(server: OutboundServer, base_dir: Path, settings: Settings) -> str:
    """The password, or an access token from the address's OAuth token source."""
    try:
        return outbound_credential(
            server, base_dir, ca_file=settings.ca_file, insecure=settings.insecure
        )
    except OAuthFailure as exc:
        raise CouldNotRun(
            f"no OAuth token for {server.username}: {exc.message}", fix=exc.fix
        ) from None


async def send_outbound(
    profile: Profile,
    base_dir: Path,
    entry: SupportAddress,
    settings: Settings,
    recipient: MailAddress,
    *,
    subject: str | None = None,
    body: str | None = None,
    direction: str = "outbound",
    transcript: Transcript | None = None,
) -> tuple[SendTestReport, TestMessage]:
    if entry.outbound is None:
        readd = (
            f"smtpconn add-address {entry.address.ascii} --readd --server HOST[:PORT] "
            "--username USER --secret env:NAME"
        )
        if entry.workflow is Workflow.FORWARDING:
            raise UsageError(
                f"{entry.address.display} is under the standard forwarding workflow: its mail "
                "does not go out through a server of yours, so there is nothing to test outbound",
                fix=f"move it to the authenticated workflow: {readd}",
            )
        raise UsageError(
            f"{entry.address.display} has no outbound server in the profile",
            fix=f"give it one: {readd}",
        )
    server = entry.outbound
    secret = await asyncio.to_thread(_credential, server, base_dir, settings)
    message = build_test_message(
        sender=entry.address,
        recipient=recipient,
        direction=direction,
        subject=subject,
        body=body,
        dkim=load_dkim_key(entry, base_dir),
    )
    report = SendTestReport(
        direction, entry.address.ascii, recipient.ascii, message.token, message.message_id,
        message.dkim_signed, settings.insecure,
    )  # fmt: skip
    report.started = time.time()
    result = await deliver(
        server_spec(server),
        secret,
        entry.address.ascii,
        [recipient.ascii],
        message.raw,
        tls_context=secure_client_context(settings.ca_file, insecure=settings.insecure),
        ehlo_name=_ehlo_name(profile),
        timeout=settings.timeout,
        address=await resolve_host(server.host, settings.resolvers, timeout=settings.timeout),
        transcript=transcript,
    )
    report.delivery = result
    _failure_report(report, result)
    return report, message


async def send_inbound(
    profile: Profile,
    base_dir: Path,
    entry: SupportAddress,
    settings: Settings,
    *,
    inbound_password: str | None,
    wait: float,
    transcript: Transcript | None = None,
) -> SendTestReport:
    """Deliver to the relay's inbound listener as the customer's server would, and read it back."""
    relay = profile.relay
    if relay is None:
        raise UsageError("the profile has no [relay] table", fix="add [relay] inbound_listen")
    if entry.mode is Mode.BIDIRECTIONAL:
        if entry.inbound is None:
            raise UsageError(
                f"{entry.address.display} has no inbound credentials in the profile",
                fix="re-add it with `smtpconn add-address --readd --mode bidirectional`",
            )
        if not inbound_password:
            raise UsageError(
                "the inbound password is needed to log in to the relay as the customer's "
                "server would, and the profile keeps only its hash",
                fix="give it to send-test (add-address showed it once)",
                input="inbound_password",
            )
    host, port = _inbound_target(relay.inbound_listen)
    # The relay's certificate carries its host name, not the address it listens on.
    server_name = relay.hostname or host
    message = build_test_message(
        sender=MailAddress("smtpconn-test", entry.address.domain),
        recipient=entry.address,
        direction="inbound",
    )
    report = SendTestReport(
        "inbound", entry.address.ascii, entry.address.ascii, message.token, message.message_id,
        False, settings.insecure,
    )  # fmt: skip
    tls_context = secure_client_context(settings.ca_file, insecure=settings.insecure)
    if entry.mode is Mode.BIDIRECTIONAL:
        assert entry.inbound is not None and inbound_password
        server = ServerSpec(
            host=server_name,
            port=port,
            security=Security.STARTTLS,
            auth=AuthMechanism.AUTO,
            username=entry.inbound.username,
        )
        result = await deliver(
            server,
            inbound_password,
            message_sender(message),
            [entry.address.ascii],
            message.raw,
            tls_context=tls_context,
            ehlo_name=_ehlo_name(profile),
            timeout=settings.timeout,
            address=host,
            transcript=transcript,
        )
    else:
        result = await _plain_forward(
            profile, server_name, host, port, entry, message, settings, transcript
        )
    report.delivery = result
    _failure_report(report, result)
    if report.exit_code is ExitCode.COULD_NOT_RUN:
        report.problem += f"; is `smtpconn relay` running and listening on {relay.inbound_listen}?"
    if report.exit_code is ExitCode.OK:
        await _confirm_received(profile, base_dir, report, wait, settings)
    return report


def _inbound_target(listen: str) -> tuple[str, int]:
    """Where to reach the inbound listener: a wildcard bind (0.0.0.0, ::) is reached locally."""
    host, port = parse_host_port(listen, default_port=25)
    assert port is not None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host, port
    if ip.is_unspecified:
        return ("::1" if ip.version == 6 else "127.0.0.1"), port
    return host, port


async def _require_relay_listening(listen: str, timeout: float) -> None:
    host, port = _inbound_target(listen)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), min(timeout, 5.0)
        )
    except (OSError, TimeoutError) as exc:
        reason = (
            "connection refused"
            if isinstance(exc, ConnectionRefusedError)
            else (exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer")
        )
        raise CouldNotRun(
            f"the relay is not listening on {host}:{port} (relay.inbound_listen): {reason}; "
            "nothing was sent",
            fix="start `smtpconn relay` (on this machine: round trip reads its Maildir sink), "
            "then run the round trip again",
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def message_sender(message: TestMessage) -> str:
    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    return str(parsed["From"])


async def _plain_forward(
    profile: Profile,
    server_name: str,
    host: str,
    port: int,
    entry: SupportAddress,
    message: TestMessage,
    settings: Settings,
    transcript: Transcript | None,
) -> DeliveryResult:
    """Ordinary forwarding (outbound-only): STARTTLS, no AUTH, like an MTA."""
    session = SmtpSession(
        server_name, port, tls_context=secure_client_context(settings.ca_file,
        insecure=settings.insecure), ehlo_name=_ehlo_name(profile), timeout=settings.timeout,
        address=host, transcript=transcript,
    )  # fmt: skip
    result = DeliveryResult([], session.stages, session.transcript_lines)
    try:
        await establish(session, Security.STARTTLS)
        result.tls = session.tls
        await session.mail(message_sender(message))
        reply = await session.rcpt(entry.address.ascii)
        if reply.code not in (250, 251):
            result.recipients.append(
                RecipientOutcome(
                    entry.address.ascii, False, reply.permanent, reply.code, reply.text
                )
            )
        else:
            data = await session.data(message.raw)
            result.queue_id = parse_queue_id(data)
            result.recipients.append(
                RecipientOutcome(entry.address.ascii, True, False, data.code, data.text)
            )
        await session.quit()
    except SmtpFailure as failure:
        result.failure = failure
        await session.quit()
    finally:
        session.close()
        result.peer_address = session.peer_address
    return result


def sink_maildir(profile: Profile, base_dir: Path) -> Path | None:
    relay = profile.relay
    if relay is None or relay.sink.kind != SinkKind.MAILDIR:
        return None
    path = Path(relay.sink.path or "maildir").expanduser()
    return path if path.is_absolute() else base_dir / path


async def _confirm_received(
    profile: Profile,
    base_dir: Path,
    report: SendTestReport,
    wait: float,
    settings: Settings,
    *,
    check_dkim: bool = False,
    expect: tuple[str, str] | None = None,
) -> None:
    root = sink_maildir(profile, base_dir)
    if root is None:
        report.notes.append(
            "the relay's sink is not a Maildir, so send-test cannot see the message arrive: "
            f"look for the token {report.token} in the help desk"
        )
        return
    watch = MaildirWatch(root, report.token, since=report.started)
    deadline = time.monotonic() + wait
    while True:
        path = await asyncio.to_thread(watch.poll)
        if path is not None:
            break
        if time.monotonic() >= deadline:
            report.problem = _not_arrived(report, root, wait)
            report.exit_code = ExitCode.CHECK_FAILED
            return
        await asyncio.sleep(POLL_INTERVAL)
    arrived = time.time()
    try:
        raw = path.read_bytes()
        # The sink writes the file as it delivers; our poll may notice it a little later.
        arrived = min(arrived, path.stat().st_mtime)
    except OSError:  # moved from new/ to cur/ in between: read it there
        found = await asyncio.to_thread(MaildirWatch(root, report.token, since=report.started).poll)
        raw = found.read_bytes() if found is not None else b""
    relay = profile.relay
    received = describe_received(raw, relay.hostname if relay else None)
    received["latency_seconds"] = round(max(0.0, arrived - report.started), 3)
    received["path"] = str(path)
    if check_dkim:
        received["dkim_verified_by_smtpconn"] = await asyncio.to_thread(
            verify_dkim, raw, settings, expect
        )
    report.received = received
    tag = received["tag"]
    if tag is None:
        report.notes.append(
            "the received copy carries no X-Smtpconn-Tag header: is this smtpconn's relay?"
        )


def _not_arrived(report: SendTestReport, root: Path, wait: float) -> str:
    d = report.delivery
    where = (
        f"the customer's server accepted it (queue id {d.queue_id}); look in its queue and log "
        "for why it was not relayed to the relay's inbound listener"
        if report.direction == "roundtrip" and d is not None and d.queue_id
        else "the relay accepted it; look in the relay's log and spool (smtpconn queue list)"
    )
    return (
        f"arrival stage: the message did not arrive in time: no message with token "
        f"{report.token} reached the relay's sink {root} within {wait:g} s; {where}"
    )


async def roundtrip(
    profile: Profile,
    base_dir: Path,
    entry: SupportAddress,
    settings: Settings,
    *,
    wait: float,
    transcript: Transcript | None = None,
) -> SendTestReport:
    """Out through the customer's server to the support address, back in through the relay."""
    if entry.mode is not Mode.BIDIRECTIONAL:
        raise UsageError(
            f"{entry.address.display} is {entry.mode.value}: a round trip needs a bidirectional "
            "address (mail to it must come back through the relay)",
            fix="test the outbound or the inbound direction instead",
            input="direction",
        )
    if profile.relay is None:
        raise UsageError(
            "a round trip comes back through the relay, and the profile has no [relay] table "
            "(nothing was sent)",
            fix="add [relay] with inbound_listen and a Maildir sink (docs/relay.md)",
        )
    if sink_maildir(profile, base_dir) is None:
        raise UsageError(
            "a round trip needs the relay's Maildir sink to see the message come back, and this "
            "profile's [relay.sink] is not a Maildir (nothing was sent)",
            fix=f"send an outbound test to {entry.address.ascii} and look for the token in the "
            "help desk",
            input="direction",
        )
    # Without a listening relay the message would sit in the customer's queue and the test
    # would only time out: say so now, before anything is sent.
    await _require_relay_listening(profile.relay.inbound_listen, settings.timeout)
    report, _ = await send_outbound(
        profile, base_dir, entry, settings, entry.address, direction="roundtrip",
        transcript=transcript,
    )  # fmt: skip
    if report.exit_code is not ExitCode.OK:
        return report
    # The customer's server signs: its signature (d= the domain, s= the selector) must be on
    # the copy that came back, and verify.
    dkim = entry.dkim
    expect = (entry.address.domain, dkim.selector) if dkim and dkim.server_signs else None
    await _confirm_received(
        profile, base_dir, report, wait, settings, check_dkim=True, expect=expect
    )
    if expect is not None and report.received is not None:
        _require_server_signature(report, report.received["dkim_verified_by_smtpconn"], expect)
    return report


def _require_server_signature(
    report: SendTestReport, verified: dict[str, Any], expect: tuple[str, str]
) -> None:
    if verified["result"] == "pass":
        return
    why = verified["detail"] or f"the signature did not verify ({verified['result']})"
    # Name the signature the profile promises: the copy may carry none to take d= and s= from.
    domain, selector = expect
    report.problem = (
        f"dkim stage: your server's DKIM signature (d={domain} s={selector}) "
        f"is missing or does not verify: {why}; make your server sign mail from "
        f"{report.address} with that selector, or re-add the address with --dkim-key to let "
        "smtpconn sign"
    )
    report.exit_code = ExitCode.CHECK_FAILED
