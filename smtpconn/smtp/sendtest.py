"""``send-test``: one test message, outbound, inbound or round trip, and a report of each stage.

* outbound: through the customer's server exactly as the relay sends (``session.deliver``).
* inbound: to the relay's inbound listener, as the customer's server would (TLS + AUTH with the
  inbound credentials for bidirectional, plain forwarding for outbound-only), then read back
  from the relay's Maildir sink to confirm it arrived and was tagged.
* roundtrip: outbound to the support address itself, then wait for it in the relay's sink and
  report what the received copy proves (sending address, SPF, DKIM, DMARC).

Exit codes follow design brief §3: 0 delivered (and received), 1 refused or not arrived in time,
3 could not connect at all.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpconn.addresses import MailAddress, parse_host_port
from smtpconn.errors import ExitCode, UsageError
from smtpconn.profile.model import (
    AuthMechanism,
    Mode,
    OutboundServer,
    Profile,
    Security,
    SupportAddress,
)
from smtpconn.profile.secrets import SecretRef, resolve_secret
from smtpconn.settings import Settings
from smtpconn.smtp.session import DeliveryResult, Transcript, deliver, secure_client_context
from smtpconn.smtp.testmessage import TOKEN_HEADER, DkimKey, TestMessage, build_test_message

TAG_HEADER = "X-Smtpconn-Tag"  # smtpconn.relay.tagging.TAG_HEADER; the grammar is stable


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
    exit_code: ExitCode = ExitCode.OK
    notes: list[str] = field(default_factory=list)

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
            "exit_code": int(self.exit_code),
            "problem": self.problem or None,
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


def _dkim_key(entry: SupportAddress, base_dir: Path) -> DkimKey | None:
    if entry.dkim is None:
        return None
    path = entry.dkim.private_key
    path = path if path.is_absolute() else base_dir / path
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"cannot read the DKIM private key {path}: {exc.strerror}",
            fix="check dkim.private_key in the profile",
        ) from None
    return DkimKey(entry.address.domain, entry.dkim.selector, pem)


async def resolve_address(host: str, settings: Settings) -> str | None:
    """The first A record of ``host`` through the configured resolvers (None: let the OS
    resolve, i.e. no --resolver given, or ``host`` is already an address)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not settings.resolvers:
        return None
    import dns.exception

    from smtpconn.net import make_resolver

    resolver = make_resolver(settings.resolvers, timeout=settings.timeout)
    try:
        answer = await resolver.resolve(host, "A", search=False)
    except dns.exception.DNSException:
        return None  # the session then reports the host as unresolvable
    return str(answer[0])


def _failure_report(report: SendTestReport, result: DeliveryResult) -> None:
    failure = result.failure
    if failure is not None:
        report.problem = f"{failure.stage.value} stage: {failure.message}"
        report.exit_code = (
            ExitCode.COULD_NOT_RUN if failure.could_not_connect else ExitCode.CHECK_FAILED
        )
        return
    refused = [r for r in result.recipients if not r.accepted]
    if refused:
        r = refused[0]
        report.problem = f"rcpt stage: {r.recipient} refused: {r.code} {r.text}"
        report.exit_code = ExitCode.CHECK_FAILED


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
        raise UsageError(
            f"{entry.address.display} has no outbound server in the profile",
            fix="re-add it under the authenticated workflow with --outbound-host",
        )
    server = entry.outbound
    secret = resolve_secret(server.secret, base_dir)
    message = build_test_message(
        sender=entry.address,
        recipient=recipient,
        direction=direction,
        subject=subject,
        body=body,
        dkim=_dkim_key(entry, base_dir),
    )
    report = SendTestReport(
        direction, entry.address.ascii, recipient.ascii, message.token, message.message_id,
        message.dkim_signed, settings.insecure,
    )  # fmt: skip
    result = await deliver(
        server,
        secret,
        entry.address.ascii,
        [recipient.ascii],
        message.raw,
        tls_context=secure_client_context(settings.ca_file, insecure=settings.insecure),
        ehlo_name=_ehlo_name(profile),
        timeout=settings.timeout,
        address=await resolve_address(server.host, settings),
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
    host, port = parse_host_port(relay.inbound_listen, default_port=25)
    assert port is not None
    message = build_test_message(
        sender=MailAddress("smtpconn-test", entry.address.domain),
        recipient=entry.address,
        direction="inbound",
    )
    report = SendTestReport(
        "inbound", entry.address.ascii, entry.address.ascii, message.token, message.message_id,
        False, settings.insecure,
    )  # fmt: skip
    if entry.mode is Mode.BIDIRECTIONAL:
        if entry.inbound is None:
            raise UsageError(f"{entry.address.display} has no inbound credentials in the profile")
        if not inbound_password:
            raise UsageError(
                "the inbound password is needed to log in to the relay as the customer's "
                "server would, and the profile keeps only its hash",
                fix="give it with --inbound-password-file PATH or the environment variable "
                "SMTPCONN_INBOUND_PASSWORD",
            )
        server = OutboundServer(
            host=relay.hostname or host,
            port=port,
            security=Security.STARTTLS,
            auth=AuthMechanism.AUTO,
            username=entry.inbound.username,
            secret=SecretRef("env", "SMTPCONN_INBOUND_PASSWORD"),
        )
        result = await deliver(
            server,
            inbound_password,
            message_sender(message),
            [entry.address.ascii],
            message.raw,
            tls_context=secure_client_context(settings.ca_file, insecure=settings.insecure),
            ehlo_name=_ehlo_name(profile),
            timeout=settings.timeout,
            address=host,
            transcript=transcript,
        )
    else:
        result = await _plain_forward(profile, host, port, entry, message, settings, transcript)
    report.delivery = result
    _failure_report(report, result)
    if report.exit_code is ExitCode.OK:
        await _confirm_received(profile, base_dir, report, wait)
    return report


def message_sender(message: TestMessage) -> str:
    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    return str(parsed["From"])


async def _plain_forward(
    profile: Profile,
    host: str,
    port: int,
    entry: SupportAddress,
    message: TestMessage,
    settings: Settings,
    transcript: Transcript | None,
) -> DeliveryResult:
    """Ordinary forwarding (outbound-only): STARTTLS when offered, no AUTH, like an MTA."""
    from smtpconn.smtp.session import (
        FailureKind,
        RecipientOutcome,
        SmtpFailure,
        SmtpSession,
        StageName,
    )

    session = SmtpSession(
        host, port, tls_context=secure_client_context(settings.ca_file, insecure=True),
        ehlo_name=_ehlo_name(profile), timeout=settings.timeout, transcript=transcript,
    )  # fmt: skip
    result = DeliveryResult([], session.stages, session.transcript_lines)
    try:
        await session.open()
        ext = await session.ehlo()
        if not ext.has("STARTTLS"):
            raise SmtpFailure(
                StageName.STARTTLS,
                FailureKind.NO_STARTTLS,
                "the relay's inbound listener does not offer STARTTLS",
            )
        await session.starttls()
        await session.ehlo()
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
            result.recipients.append(
                RecipientOutcome(entry.address.ascii, True, False, data.code, data.text)
            )
        result.tls = session.tls
        await session.quit()
    except SmtpFailure as failure:
        result.failure = failure
        session.close()
    return result


def sink_maildir(profile: Profile, base_dir: Path) -> Path | None:
    relay = profile.relay
    if relay is None or relay.sink.kind != "maildir":
        return None
    path = Path(relay.sink.path or "maildir").expanduser()
    return path if path.is_absolute() else base_dir / path


def find_in_maildir(root: Path, token: str) -> bytes | None:
    needle = token.encode()
    for sub in ("new", "cur"):
        for path in root.glob(f"**/{sub}/*"):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            if needle in raw:
                return raw
    return None


async def _confirm_received(
    profile: Profile, base_dir: Path, report: SendTestReport, wait: float
) -> None:
    root = sink_maildir(profile, base_dir)
    if root is None:
        report.notes.append(
            f"the relay's sink is not a Maildir: check the help desk for the token {report.token}"
        )
        return
    started = time.monotonic()
    deadline = started + wait
    while True:
        raw = find_in_maildir(root, report.token)
        if raw is not None:
            report.received = describe_received(raw)
            report.received["latency_seconds"] = round(time.monotonic() - started, 3)
            return
        if time.monotonic() >= deadline:
            report.problem = (
                f"not received: no message with token {report.token} reached {root} "
                f"within {wait:g} s"
            )
            report.exit_code = ExitCode.CHECK_FAILED
            return
        await asyncio.sleep(0.2)


def describe_received(raw: bytes) -> dict[str, Any]:
    """What the relay's copy says: tag, trace, Authentication-Results."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    tag = parsed.get(TAG_HEADER)
    return {
        "tag": str(tag) if tag else None,
        "token_header": str(parsed.get(TOKEN_HEADER) or ""),
        "received": [str(h) for h in parsed.get_all("Received") or []][:3],
        "authentication_results": [str(h) for h in parsed.get_all("Authentication-Results") or []],
        "dkim_signature_present": parsed.get("DKIM-Signature") is not None,
    }


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
            fix="use --direction outbound or inbound",
        )
    report, _ = await send_outbound(
        profile, base_dir, entry, settings, entry.address, direction="roundtrip",
        transcript=transcript,
    )  # fmt: skip
    if report.exit_code is not ExitCode.OK:
        return report
    await _confirm_received(profile, base_dir, report, wait)
    if report.received is not None:
        raw = find_in_maildir(sink_maildir(profile, base_dir) or base_dir, report.token)
        if raw is not None:
            report.received["dkim_verified_by_smtpconn"] = verify_dkim(raw, settings)
    return report


def verify_dkim(raw: bytes, settings: Settings) -> dict[str, Any]:
    """Verify the received copy's DKIM signature ourselves, against the configured resolver."""
    import dkim as dkimpy
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not settings.resolvers)
    if settings.resolvers:
        import dns.nameserver

        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in settings.resolvers]
    resolver.lifetime = settings.timeout

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", search=False)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(r.strings) for r in answer[:1])

    if b"dkim-signature:" not in raw.lower():
        return {"result": "none", "detail": "the received copy carries no DKIM signature"}
    try:
        ok = bool(dkimpy.verify(raw, dnsfunc=dnsfunc))
    except Exception as exc:  # dkimpy raises several unrelated types for malformed input
        return {"result": "permerror", "detail": str(exc)}
    return {"result": "pass" if ok else "fail", "detail": ""}
