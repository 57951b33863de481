"""The connector profile: what it holds, its defaults, and how it maps to and from TOML data.

The mapping is hand-written rather than generated so that every finding names the exact key
(``addresses[2].outbound.port``) and says how to fix it, and so that unknown keys are an error
instead of silently dropped: a key we do not know is a typo or a setting we would ignore, and
the administrator must hear of it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from smtpconn.addresses import MailAddress, normalise_host, parse_address, parse_port
from smtpconn.errors import UsageError
from smtpconn.oauth.providers import Flow, Provider
from smtpconn.profile.keys import (
    LISTEN,
    PASSWORD_HASH,
    PATH,
    POSITIVE_INT,
    PROCESSES,
    SECONDS,
    SIZE,
    TEXT,
    TIMESTAMP,
    Kind,
    choice,
    declare,
    declared_keys,
    enum_parser,
)
from smtpconn.profile.oauth import OAuthSettings, check_endpoint, oauth_problems, oauth_to_data
from smtpconn.profile.secrets import SecretRef, is_password_hash, parse_secret_ref
from smtpconn.smtp.vocab import AuthMechanism as AuthMechanism
from smtpconn.smtp.vocab import Security as Security

PROFILE_VERSION = 1


class Mode(StrEnum):
    BIDIRECTIONAL = "bidirectional"
    OUTBOUND_ONLY = "outbound-only"


class Workflow(StrEnum):
    AUTHENTICATED = "authenticated"
    FORWARDING = "forwarding"


class UnauthenticatedPolicy(StrEnum):
    """What the relay does with unauthenticated (forwarded) mail whose DMARC fails."""

    TAG = "tag"  # deliver, tagged auth=fail (the help desk decides)
    HOLD = "hold"  # keep it in the spool's held state until `smtpconn queue retry`
    REJECT = "reject"  # 550 5.7.1 at the end of DATA


DEFAULT_PORTS: dict[Security, int] = {Security.STARTTLS: 587, Security.TLS: 465}


def default_security_for_port(port: int | None) -> Security:
    """465 means implicit TLS (RFC 8314); every other port is STARTTLS."""
    return Security.TLS if port == 465 else Security.STARTTLS


@dataclass(frozen=True, slots=True)
class SendingLimits:
    """``[addresses.outbound.limits]``: what the customer's server allows this login. The relay
    keeps one delivery lane per outbound ``host:port``; addresses that share a server share its
    lane, and where their limits differ the strictest value applies (see
    :func:`lane_limits`). Unset: no limit of that kind (the relay's default concurrency)."""

    # simultaneous connections (sessions) to the server
    max_connections: int | None = declare(None, POSITIVE_INT)
    # messages (SMTP transactions) started per rolling minute
    messages_per_minute: int | None = declare(None, POSITIVE_INT)
    # recipients per transaction; a reply to more is sent as several transactions
    recipients_per_message: int | None = declare(None, POSITIVE_INT)
    # recipients accepted per rolling 24 hours
    recipients_per_day: int | None = declare(None, POSITIVE_INT)

    def given(self) -> bool:
        return any(getattr(self, k.name) is not None for k in declared_keys(SendingLimits))

    def over(self, base: SendingLimits) -> SendingLimits:
        """These values where set, ``base``'s elsewhere (explicit values over a preset)."""
        values = {
            k.name: getattr(self, k.name)
            if getattr(self, k.name) is not None
            else getattr(base, k.name)
            for k in declared_keys(SendingLimits)
        }
        return SendingLimits(**values)


_NO_LIMITS = SendingLimits()  # shared by every server without limits (it is immutable)


def lane_limits(limits: list[SendingLimits]) -> SendingLimits:
    """One server's limits from those of every address using it: per key the smallest value
    given, since the server enforces its limit whichever address the relay sends for."""
    values: dict[str, int | None] = {}
    for key in declared_keys(SendingLimits):
        given = [v for item in limits if (v := getattr(item, key.name)) is not None]
        values[key.name] = min(given) if given else None
    return SendingLimits(**values)


@dataclass(frozen=True, slots=True)
class OutboundServer:
    """The customer's server that the help desk's replies go out through (TLS + AUTH)."""

    host: str
    port: int
    security: Security
    auth: AuthMechanism
    username: str
    secret: SecretRef | None  # None exactly when an OAuth token source gives the credential
    oauth: OAuthSettings | None = None
    limits: SendingLimits = field(default_factory=SendingLimits)

    @property
    def lane(self) -> str:
        """The relay's delivery lane for this server: ``host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DkimSettings:
    selector: str
    # As written in the profile; relative paths are relative to the profile. None: the
    # customer's server signs with this selector (Microsoft 365 selector1/2, Google "google"),
    # so smtpconn holds no key and signs nothing.
    private_key: Path | None = None

    @property
    def server_signs(self) -> bool:
        return self.private_key is None


@dataclass(frozen=True, slots=True)
class InboundCredentials:
    """What the relay accepts from the customer's server (bidirectional mode): a hash only.
    During a rotation (``smtpconn rotate-credentials``) the password it replaced stays valid
    until ``previous_valid_until``, so the customer's server can switch without a gap."""

    username: str
    password_hash: str
    previous_password_hash: str | None = None
    previous_valid_until: datetime | None = None  # timezone-aware; set with the previous hash
    issued_at: datetime | None = None  # when the current password was made (status shows its age)

    def valid_hashes(self, now: datetime) -> list[tuple[str, bool]]:
        """(hash, is_previous) of every password accepted at ``now``."""
        hashes = [(self.password_hash, False)]
        if self.rotation_pending(now):
            assert self.previous_password_hash is not None
            hashes.append((self.previous_password_hash, True))
        return hashes

    def rotation_pending(self, now: datetime) -> bool:
        """Whether the replaced password is still accepted (its grace has not ended)."""
        until = self.previous_valid_until
        return self.previous_password_hash is not None and until is not None and now < until


@dataclass(frozen=True, slots=True)
class SupportAddress:
    address: MailAddress
    mode: Mode
    workflow: Workflow
    outbound: OutboundServer | None = None
    dkim: DkimSettings | None = None
    inbound: InboundCredentials | None = None
    unauthenticated_policy: UnauthenticatedPolicy = UnauthenticatedPolicy.TAG
    # ARC sealers (the d= of the latest ARC-Seal) whose ARC-Authentication-Results are believed
    # for mail to this address, e.g. the customer's Microsoft 365 tenant or google.com.
    trusted_arc_sealers: tuple[str, ...] = ()


class SinkKind(StrEnum):
    """Where the relay hands inbound mail: ``[relay.sink] kind`` (one sink per kind in
    ``smtpconn.relay.sinks``)."""

    MAILDIR = "maildir"
    WEBHOOK = "webhook"
    PIPE = "pipe"
    SMTP = "smtp"
    LMTP = "lmtp"


@dataclass(frozen=True, slots=True)
class SinkSettings:
    kind: SinkKind = SinkKind.MAILDIR
    path: str | None = None
    url: str | None = None
    secret: SecretRef | None = None  # HMAC key for webhook signatures
    command: list[str] | None = None
    host: str | None = None
    port: int | None = None
    timeout: int | None = None  # seconds for one webhook/pipe/smtp hand-over; 60 if unset


class BareNewline(StrEnum):
    """What the relay does with a bare CR or bare LF inside DATA (a smuggling vector)."""

    REJECT = "reject"  # 550 5.6.11, as Postfix's smtpd_forbid_bare_newline and chasquid
    NORMALIZE = "normalize"  # turn each into CRLF and accept


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """The ``[relay]`` table. Each key is declared once, here: its type and default, its kind
    (what the reader accepts and refuses, how it is written) and whether ``smtpconn relay`` has
    an option overriding it. The reader, the writer and the relay's overrides follow these."""

    inbound_listen: str = declare("127.0.0.1:2525", LISTEN, cli=True)
    submission_listen: str = declare("127.0.0.1:2587", LISTEN, cli=True)
    tls_cert: str | None = declare(None, PATH, cli=True)
    tls_key: str | None = declare(None, PATH, cli=True)
    spool: str = declare("spool", PATH, cli=True)
    hostname: str | None = declare(None, TEXT, cli=True)
    max_message_size: int = declare(25 * 1024 * 1024, SIZE, cli=True)
    sink: SinkSettings = field(default_factory=SinkSettings)
    # optional implicit-TLS (RFC 8314) inbound listener
    inbound_tls_listen: str | None = declare(None, LISTEN, cli=True)
    # AUTH on the submission listener when both are set
    submission_username: str | None = declare(None, TEXT)
    submission_password_hash: str | None = declare(None, PASSWORD_HASH)
    # the submission password a rotation replaced, accepted until the time after it
    submission_previous_password_hash: str | None = declare(None, PASSWORD_HASH)
    submission_previous_valid_until: datetime | None = declare(None, TIMESTAMP)  # noqa: RUF009
    # seconds before the first retry; doubles per attempt (cap 1 h)
    retry_initial: int = declare(60, POSITIVE_INT, cli=True)
    # seconds after which an undelivered message bounces
    retry_window: int = declare(5 * 24 * 3600, POSITIVE_INT, cli=True)
    max_connections_per_ip: int = declare(20, POSITIVE_INT, cli=True)
    # simultaneous sessions on all listeners together (421 beyond)
    max_sessions: int = declare(500, POSITIVE_INT)
    # bytes of DATA held at once by all sessions
    max_memory: int = declare(256 * 1024 * 1024, POSITIVE_INT)
    # seconds of client silence (also between DATA bytes)
    idle_timeout: float = declare(300.0, SECONDS)
    # seconds for one whole DATA phase, however steady
    data_timeout: float = declare(600.0, SECONDS)
    bare_newline: BareNewline = declare(BareNewline.REJECT, choice(BareNewline))  # noqa: RUF009
    # IP:PORT of the /metrics, /healthz and /readyz listener; off unless set
    metrics_listen: str | None = declare(None, LISTEN)
    # processes accepting inbound mail (each with its own spool shard); "auto": min(CPUs, 4)
    processes: int | str = declare(1, PROCESSES, cli=True)


@dataclass(frozen=True, slots=True)
class ConnectorSettings:
    name: str | None = None
    ehlo_name: str | None = None  # the name smtpconn says in EHLO; the local FQDN if unset


@dataclass(frozen=True, slots=True)
class Profile:
    version: int = PROFILE_VERSION
    connector: ConnectorSettings = field(default_factory=ConnectorSettings)
    addresses: tuple[SupportAddress, ...] = ()
    relay: RelaySettings | None = None
    # Each address key's position in ``addresses``, built on first use and handed on by
    # ``with_address``: an import of a thousand rows into thousands of addresses would otherwise
    # scan the whole tuple several times per row. Not part of the profile's value.
    _positions: dict[str, int] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def _position_of(self) -> dict[str, int]:
        if self._positions is None:
            positions: dict[str, int] = {}
            for i, e in enumerate(self.addresses):
                positions.setdefault(e.address.key, i)  # the first, as a scan would find
            object.__setattr__(self, "_positions", positions)
            return positions
        return self._positions

    def find(self, address: MailAddress) -> SupportAddress | None:
        position = self._position_of().get(address.key)
        return None if position is None else self.addresses[position]

    def with_address(self, entry: SupportAddress) -> Profile:
        """Replace the entry with the same address in place (keeping order), or append it."""
        positions = self._position_of()
        key = entry.address.key
        position = positions.get(key)
        if position is None:
            appended = replace(self, addresses=(*self.addresses, entry))
            object.__setattr__(appended, "_positions", {**positions, key: len(self.addresses)})
            return appended
        addresses = (*self.addresses[:position], entry, *self.addresses[position + 1 :])
        replaced = replace(self, addresses=addresses)
        object.__setattr__(replaced, "_positions", positions)
        return replaced

    def without_address(self, address: MailAddress) -> Profile:
        return replace(
            self, addresses=tuple(e for e in self.addresses if e.address.key != address.key)
        )


# --------------------------------------------------------------------------------------------
# From TOML data


class Findings:
    """Collects every problem in a profile, each with the key path it concerns."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []  # (key path, message)

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


_MISSING: Any = object()


class _Table:
    """A TOML table being read: takes keys off one at a time and reports what is left as unknown."""

    def __init__(self, data: Mapping[str, Any], path: str, findings: Findings) -> None:
        self.data = dict(data)
        self.path = path
        self.findings = findings

    def _key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, kind: type | tuple[type, ...], *, required: bool = False) -> Any:
        value = self.data.pop(key, _MISSING)
        if value.__class__ is not bool and isinstance(value, kind):
            return value  # the common case first: thousands of these per large profile
        if value is _MISSING:
            if required:
                self.findings.add(self._key_path(key), "is required but missing")
            return None
        # bool is an int in Python; a port of `true` must not pass as 1.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.findings.add(self._key_path(key), f"must be {_kind_name(kind)}, not a boolean")
            return None
        if not isinstance(value, kind):
            self.findings.add(
                self._key_path(key), f"must be {_kind_name(kind)}, not {type(value).__name__}"
            )
            return None
        return value

    def take_parsed(self, key: str, parse: Callable[[Any], Any], *, required: bool = False) -> Any:
        raw = self.take(key, (str, int), required=required)
        if raw is None:
            return None
        try:
            return parse(raw)
        except UsageError as exc:
            self.findings.add(self._key_path(key), str(exc))
        except ValueError as exc:
            self.findings.add(self._key_path(key), str(exc))
        return None

    def take_parsed_as(self, key: str, kind: Kind) -> Any:
        """A value of a declared ``kind`` (None when missing or refused, with the finding)."""
        raw = self.take(key, kind.accepts)
        if raw is None:
            return None
        try:
            return kind.parse(raw)
        except ValueError as exc:
            self.findings.add(self._key_path(key), str(exc))
        return None

    def sub(self, key: str) -> _Table | None:
        value = self.take(key, dict)
        return None if value is None else _Table(value, self._key_path(key), self.findings)

    def finish(self) -> None:
        for key in self.data:
            self.findings.add(self._key_path(key), "is not a known key (check its spelling)")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        dict: "a table",
        list: "an array",
        bool: "a boolean",
        datetime: "a date-time with a zone",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _read_outbound(table: _Table) -> OutboundServer | None:
    host = table.take_parsed("host", lambda v: normalise_host(str(v)), required=True)
    port = table.take_parsed("port", parse_port)
    security = table.take_parsed("security", enum_parser(Security))
    auth = table.take_parsed("auth", enum_parser(AuthMechanism))
    username = table.take("username", str, required=True)
    oauth_table = table.sub("oauth")
    limits_table = table.sub("limits")
    limits = _read_limits(limits_table) if limits_table is not None else _NO_LIMITS
    # A token source replaces the static secret: one of the two, never both.
    secret = table.take_parsed(
        "secret", lambda v: parse_secret_ref(str(v)), required=oauth_table is None
    )
    oauth = _read_oauth(oauth_table) if oauth_table is not None else None
    table.finish()
    if oauth_table is not None:
        auth = _oauth_mechanism(table, auth, secret)
    if host is None or username is None or (secret is None and oauth is None):
        return None
    if security is None:
        security = default_security_for_port(port)
    return OutboundServer(
        host=host,
        port=port if port is not None else DEFAULT_PORTS[security],
        security=security,
        auth=auth or AuthMechanism.AUTO,
        username=username,
        secret=secret,
        oauth=oauth,
        limits=limits,
    )


def _read_limits(table: _Table) -> SendingLimits:
    values, _given = _read_declared(table, SendingLimits)
    table.finish()
    return SendingLimits(**values)


def _oauth_mechanism(
    table: _Table, auth: AuthMechanism | None, secret: SecretRef | None
) -> AuthMechanism:
    """An OAuth token logs in with XOAUTH2 (OAUTHBEARER where only that is offered), or with
    OAUTHBEARER alone when the profile says so; ``auto`` means xoauth2."""
    if secret is not None:
        table.findings.add(
            f"{table.path}.secret", "cannot be set together with oauth (the token source logs in)"
        )
    if auth is AuthMechanism.OAUTHBEARER:
        return auth
    if auth not in (None, AuthMechanism.AUTO, AuthMechanism.XOAUTH2):
        table.findings.add(
            f"{table.path}.auth", f"must be xoauth2 or oauthbearer with oauth, not {auth}"
        )
    return AuthMechanism.XOAUTH2


def _read_oauth(table: _Table) -> OAuthSettings | None:
    provider = table.take_parsed("provider", enum_parser(Provider), required=True)
    flow = table.take_parsed("flow", enum_parser(Flow), required=True)
    tenant = table.take("tenant", str)
    client_id = table.take("client_id", str)
    client_secret = table.take_parsed("client_secret", lambda v: parse_secret_ref(str(v)))
    key = table.take_parsed("key", lambda v: parse_secret_ref(str(v)))
    token_cache = table.take("token_cache", str)
    token_endpoint = table.take_parsed("token_endpoint", lambda v: check_endpoint(str(v)))
    device_endpoint = table.take_parsed("device_endpoint", lambda v: check_endpoint(str(v)))
    scope = table.take("scope", str)
    table.finish()
    if provider is None or flow is None:
        return None
    settings = OAuthSettings(
        provider=provider,
        flow=flow,
        tenant=tenant,
        client_id=client_id,
        client_secret=client_secret,
        key=key,
        token_cache=Path(token_cache) if token_cache else None,
        token_endpoint=token_endpoint,
        device_endpoint=device_endpoint,
        scope=scope,
    )
    for name, message in oauth_problems(settings):
        table.findings.add(f"{table.path}.{name}", message)
    return settings


def _read_dkim(table: _Table) -> DkimSettings | None:
    selector = table.take("selector", str, required=True)
    key = table.take("private_key", str)  # absent: the customer's server signs
    table.finish()
    if selector is None:
        return None
    return DkimSettings(selector=selector, private_key=Path(key) if key is not None else None)


def _read_inbound(table: _Table) -> InboundCredentials | None:
    username = table.take("username", str, required=True)
    password_hash = table.take("password_hash", str, required=True)
    previous_hash = table.take("previous_password_hash", str)
    previous_until = table.take_parsed_as("previous_valid_until", TIMESTAMP)
    issued_at = table.take_parsed_as("issued_at", TIMESTAMP)
    table.finish()
    bad_hashes = [
        key
        for key, value in (
            ("password_hash", password_hash),
            ("previous_password_hash", previous_hash),
        )
        if value is not None and not is_password_hash(value)
    ]
    for key in bad_hashes:
        table.findings.add(
            f"{table.path}.{key}",
            "is not a smtpconn scrypt hash; never put a clear password here "
            "(re-add the address with --readd to generate new credentials)",
        )
    if (previous_hash is None) != (previous_until is None):
        table.findings.add(
            f"{table.path}.previous_password_hash",
            "and previous_valid_until must be set together (smtpconn rotate-credentials writes both)",
        )
    if bad_hashes or username is None or password_hash is None:
        return None
    return InboundCredentials(
        username=username,
        password_hash=password_hash,
        previous_password_hash=previous_hash,
        previous_valid_until=previous_until,
        issued_at=issued_at,
    )


def _read_address(table: _Table) -> SupportAddress | None:
    address = table.take_parsed("address", lambda v: parse_address(str(v)), required=True)
    mode = table.take_parsed("mode", enum_parser(Mode), required=True)
    workflow = table.take_parsed("workflow", enum_parser(Workflow))
    workflow = workflow or Workflow.AUTHENTICATED
    outbound_table = table.sub("outbound")
    dkim_table = table.sub("dkim")
    inbound_table = table.sub("inbound")
    outbound = _read_outbound(outbound_table) if outbound_table else None
    dkim = _read_dkim(dkim_table) if dkim_table else None
    inbound = _read_inbound(inbound_table) if inbound_table else None
    policy = table.take_parsed("unauthenticated_policy", enum_parser(UnauthenticatedPolicy))
    sealers = _read_sealers(table)
    table.finish()
    if address is None or mode is None:
        return None
    if workflow is Workflow.AUTHENTICATED and outbound_table is None:
        table.findings.add(
            f"{table.path}.outbound",
            "is required for the authenticated workflow (the customer's server for replies)",
        )
    if mode is Mode.BIDIRECTIONAL and workflow is Workflow.AUTHENTICATED and inbound_table is None:
        table.findings.add(
            f"{table.path}.inbound",
            "is required for a bidirectional address (the credentials the relay accepts); "
            "re-add the address with --readd to generate them",
        )
    return SupportAddress(
        address=address,
        mode=mode,
        workflow=workflow,
        outbound=outbound,
        dkim=dkim,
        inbound=inbound,
        unauthenticated_policy=policy or UnauthenticatedPolicy.TAG,
        trusted_arc_sealers=sealers,
    )


def _read_sealers(table: _Table) -> tuple[str, ...]:
    values = table.take("trusted_arc_sealers", list)
    if values is None:
        return ()
    try:
        return parse_sealers(values)
    except ValueError as exc:
        table.findings.add(f"{table.path}.trusted_arc_sealers", str(exc))
        return ()


_SEALER = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)


def parse_sealers(values: Iterable[object]) -> tuple[str, ...]:
    """Sealer domains, lower-cased, without duplicates; a value that is no domain name is an
    error (it could never match a d= tag, so it would trust nothing without saying so)."""
    found: list[str] = []
    for value in values:
        name = str(value).strip().rstrip(".").lower() if isinstance(value, str) else ""
        if not _SEALER.fullmatch(name):
            raise ValueError(f"{value!r} is not a domain name (an ARC sealer's d=)")
        if name not in found:
            found.append(name)
    return tuple(found)


def _read_sink(table: _Table) -> SinkSettings:
    try:
        kind = enum_parser(SinkKind)(table.take("kind", str) or SinkKind.MAILDIR)
    except ValueError as exc:
        table.findings.add(f"{table.path}.kind", str(exc))
        kind = SinkKind.MAILDIR  # only to finish reading: the finding stops the load
    path = table.take("path", str)
    url = table.take("url", str)
    secret = table.take_parsed("secret", lambda v: parse_secret_ref(str(v)))
    command = table.take("command", (list, str))
    if isinstance(command, str):
        # A string is split like a shell would split it (quotes respected) but never run by a
        # shell: `command = "/usr/bin/rt-mailgate --queue support"` means what it looks like.
        try:
            command = shlex.split(command)
        except ValueError as exc:
            table.findings.add(f"{table.path}.command", f"cannot be split into arguments: {exc}")
            command = None
        if command == []:
            table.findings.add(f"{table.path}.command", "is empty")
            command = None
    if command is not None and not all(isinstance(c, str) for c in command):
        table.findings.add(f"{table.path}.command", "must be an array of strings")
        command = None
    host = table.take_parsed("host", lambda v: normalise_host(str(v)))
    port = table.take_parsed("port", parse_port)
    timeout = table.take("timeout", int)
    if timeout is not None and timeout <= 0:
        table.findings.add(f"{table.path}.timeout", "must be a positive number of seconds")
    table.finish()
    needs = {
        SinkKind.WEBHOOK: ("url", url),
        SinkKind.PIPE: ("command", command),
        SinkKind.SMTP: ("host", host),
        SinkKind.LMTP: ("host", host),
    }
    if kind in needs and needs[kind][1] is None:
        table.findings.add(f"{table.path}.{needs[kind][0]}", f"is required for a {kind} sink")
    return SinkSettings(
        kind=kind,
        path=path,
        url=url,
        secret=secret,
        command=command,
        host=host,
        port=port,
        timeout=timeout,
    )


def _read_declared(table: _Table, record: type[Any]) -> tuple[dict[str, Any], set[str]]:
    """The values of the keys ``record`` declares (defaults for the missing, empty or refused),
    and the names of the keys the table gave a value of the right type."""
    values: dict[str, Any] = {}
    given: set[str] = set()
    for declared in declared_keys(record):
        values[declared.name] = declared.default
        raw = table.take(declared.name, declared.kind.accepts)
        if raw is None:
            continue
        given.add(declared.name)
        try:
            value = declared.kind.parse(raw)
        except ValueError as exc:
            table.findings.add(f"{table.path}.{declared.name}", str(exc))
            continue
        # An empty string or zero means "the default" for a key that has one.
        if value or declared.default is None:
            values[declared.name] = value
    return values, given


def _read_relay(table: _Table) -> RelaySettings:
    values, given = _read_declared(table, RelaySettings)
    if ("submission_username" in given) != ("submission_password_hash" in given):
        table.findings.add(
            f"{table.path}.submission_username",
            "and submission_password_hash must be set together",
        )
    previous = ("submission_previous_password_hash", "submission_previous_valid_until")
    if (previous[0] in given) != (previous[1] in given):
        table.findings.add(f"{table.path}.{previous[0]}", f"and {previous[1]} must be set together")
    sink_table = table.sub("sink")
    sink = _read_sink(sink_table) if sink_table else SinkSettings()
    table.finish()
    return RelaySettings(sink=sink, **values)


def profile_from_data(data: Mapping[str, Any]) -> tuple[Profile, Findings]:
    """Build a profile from parsed TOML; every problem found is returned, not just the first."""
    findings = Findings()
    root = _Table(data, "", findings)
    version = root.take("version", int, required=True)
    if version is not None and version != PROFILE_VERSION:
        findings.add(
            "version",
            f"is {version}; this smtpconn reads version {PROFILE_VERSION} "
            + ("(upgrade smtpconn)" if version > PROFILE_VERSION else "(no migration exists)"),
        )
    connector_table = root.sub("connector")
    connector = ConnectorSettings()
    if connector_table is not None:
        connector = ConnectorSettings(
            name=connector_table.take("name", str),
            ehlo_name=connector_table.take_parsed("ehlo_name", lambda v: normalise_host(str(v))),
        )
        connector_table.finish()
    raw_addresses = root.take("addresses", list) or []
    addresses: list[SupportAddress] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw_addresses):
        path = f"addresses[{index}]"
        if not isinstance(item, dict):
            findings.add(path, "must be a table ([[addresses]])")
            continue
        entry = _read_address(_Table(item, path, findings))
        if entry is None:
            continue
        key = entry.address.key
        if key in seen:
            findings.add(
                path, f"{entry.address.display} is already listed as addresses[{seen[key]}]"
            )
            continue
        seen[key] = index
        addresses.append(entry)
    relay_table = root.sub("relay")
    relay = _read_relay(relay_table) if relay_table is not None else None
    root.finish()
    profile = Profile(
        version=version or PROFILE_VERSION,
        connector=connector,
        addresses=tuple(addresses),
        relay=relay,
    )
    return profile, findings


# --------------------------------------------------------------------------------------------
# To TOML data


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _write_declared(record: Any) -> dict[str, Any]:
    """The keys ``record``'s class declares, as TOML values (None: the key is left out)."""
    data: dict[str, Any] = {}
    for declared in declared_keys(type(record)):
        value = getattr(record, declared.name)
        if value is not None:
            data[declared.name] = declared.kind.write(value)
    return data


def entry_to_data(entry: SupportAddress) -> dict[str, Any]:
    """One ``[[addresses]]`` table, exactly as the profile stores it."""
    item: dict[str, Any] = {
        "address": entry.address.ascii,
        "mode": entry.mode.value,
        "workflow": entry.workflow.value,
    }
    if entry.unauthenticated_policy is not UnauthenticatedPolicy.TAG:
        item["unauthenticated_policy"] = entry.unauthenticated_policy.value
    if entry.trusted_arc_sealers:
        item["trusted_arc_sealers"] = list(entry.trusted_arc_sealers)
    if entry.outbound is not None:
        o = entry.outbound
        item["outbound"] = {
            "host": o.host,
            "port": o.port,
            "security": o.security.value,
            "auth": o.auth.value,
            "username": o.username,
        }
        if o.secret is not None:
            item["outbound"]["secret"] = str(o.secret)
        if o.oauth is not None:
            item["outbound"]["oauth"] = oauth_to_data(o.oauth)
        if o.limits.given():
            item["outbound"]["limits"] = _write_declared(o.limits)
    if entry.dkim is not None:
        item["dkim"] = {"selector": entry.dkim.selector}
        if entry.dkim.private_key is not None:
            item["dkim"]["private_key"] = str(entry.dkim.private_key)
    if entry.inbound is not None:
        item["inbound"] = _drop_none(
            {
                "username": entry.inbound.username,
                "password_hash": entry.inbound.password_hash,
                "previous_password_hash": entry.inbound.previous_password_hash,
                "previous_valid_until": entry.inbound.previous_valid_until,
                "issued_at": entry.inbound.issued_at,
            }
        )
    return item


def profile_to_data(profile: Profile) -> dict[str, Any]:
    data: dict[str, Any] = {"version": profile.version}
    connector = _drop_none(
        {"name": profile.connector.name, "ehlo_name": profile.connector.ehlo_name}
    )
    if connector:
        data["connector"] = connector
    addresses = [entry_to_data(entry) for entry in profile.addresses]
    if addresses:
        data["addresses"] = addresses
    if profile.relay is not None:
        r = profile.relay
        relay = _write_declared(r)
        s = r.sink
        relay["sink"] = _drop_none(
            {
                "kind": s.kind,
                "path": s.path,
                "url": s.url,
                "secret": str(s.secret) if s.secret else None,
                "command": s.command,
                "host": s.host,
                "port": s.port,
                "timeout": s.timeout,
            }
        )
        data["relay"] = relay
    return data
