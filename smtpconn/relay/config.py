"""The relay's view of the profile: where it listens, which recipients it serves and how, which
senders may submit replies, and the credentials it accepts.

Everything the running relay needs is resolved here once (paths relative to the profile's folder,
command-line overrides applied), so the listeners and workers never read the profile themselves.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtpconn.addresses import MailAddress, parse_address
from smtpconn.errors import UsageError
from smtpconn.profile.keys import declared_keys
from smtpconn.profile.model import (
    BareNewline,
    Mode,
    Profile,
    RelaySettings,
    SinkKind,
    SinkSettings,
    SupportAddress,
    Workflow,
)
from smtpconn.relay.folders import unwritable_dir
from smtpconn.relay.sinks import SinkContext, sink_problems
from smtpconn.settings import Settings

DEFAULT_SINK_TIMEOUT = 60.0
RETRY_CAP = 3600.0  # the back-off never waits longer than an hour between attempts


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int  # 0 = any free port (tests)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str, *, what: str) -> ListenAddress:
    """``HOST:PORT`` where HOST is an IP address (we bind to it) and PORT may be 0."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise UsageError(
            f"{what} {value!r} must be IP:PORT", fix="e.g. 127.0.0.1:2525 or [::1]:2525"
        ) from None
    if not 0 <= port <= 65535:
        raise UsageError(f"{what} {value!r} has a port out of range", fix="use 0-65535")
    return ListenAddress(host, port)


def is_loopback(listen: ListenAddress) -> bool:
    return ipaddress.ip_address(listen.host).is_loopback


@dataclass(frozen=True, slots=True)
class RelayOverrides:
    """Command-line values that win over the profile's ``[relay]`` keys (None = not given):
    one field per key declared with ``cli=True`` in :class:`RelaySettings` (a test holds them
    equal), typed as the command line gives them."""

    inbound_listen: str | None = None
    inbound_tls_listen: str | None = None
    submission_listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    spool: str | None = None
    hostname: str | None = None
    max_message_size: int | None = None
    retry_initial: float | None = None
    retry_window: float | None = None
    max_connections_per_ip: int | None = None
    processes: str | None = None  # a positive integer or "auto"


# "auto" processes: one per CPU, at most this many (each costs ~40 MB and a start-up).
AUTO_PROCESSES_MAX = 4


def resolve_processes(value: int | str, cpus: int | None = None) -> int:
    """The number of relay processes ``[relay] processes`` (or ``--processes``) asks for."""
    from smtpconn.profile.keys import AUTO

    if value == AUTO:
        return max(1, min(cpus if cpus is not None else (os.cpu_count() or 1), AUTO_PROCESSES_MAX))
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise UsageError(
            f'processes {value!r} must be a positive integer or "auto"',
            fix='e.g. --processes 2 (or processes = "auto" in [relay])',
        )
    return int(text)


def share(limit: int, processes: int) -> int:
    """One process's part of a limit the administrator set for the whole relay: rounded up, so
    no part is 0 and together they are the limit (or a little more)."""
    return -(-limit // max(1, processes))


@dataclass(frozen=True, slots=True)
class Credential:
    """A login the relay accepts (user name + scrypt hash) and the support addresses it may
    deliver to, as route keys (see :meth:`InboundRoute.key`). ``previous`` marks a password a
    rotation replaced and still accepts during its grace period (logged ``credential=previous``,
    so the administrator sees when the customer's server switched)."""

    username: str
    password_hash: str
    scope: frozenset[str] | None = None  # None: not bound to addresses (the submission login)
    previous: bool = False

    def covers(self, route: InboundRoute) -> bool:
        return self.scope is None or route.key in self.scope


@dataclass(frozen=True, slots=True)
class InboundRoute:
    """How the relay treats mail for one support address arriving on the inbound listener."""

    address: SupportAddress

    @property
    def key(self) -> str:
        return _key(self.address.address)

    @property
    def needs_auth(self) -> bool:
        # A bidirectional address under the authenticated workflow only accepts mail from the
        # customer's server, proven by AUTH over TLS; everything else is ordinary forwarding.
        return (
            self.address.mode is Mode.BIDIRECTIONAL
            and self.address.workflow is Workflow.AUTHENTICATED
        )


ROUTE_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class RelayConfig:
    profile: Profile
    base_dir: Path
    settings: Settings
    inbound_listen: ListenAddress
    submission_listen: ListenAddress
    inbound_tls_listen: ListenAddress | None
    tls_cert: Path | None
    tls_key: Path | None
    spool_dir: Path
    hostname: str
    max_message_size: int
    sink: SinkSettings
    sink_timeout: float
    retry_initial: float
    retry_window: float
    max_connections_per_ip: int
    submission_username: str | None
    submission_password_hash: str | None
    max_sessions: int = 500  # all listeners together
    max_memory: int = 256 * 1024 * 1024  # DATA bytes held at once by all sessions
    idle_timeout: float = 300.0
    data_timeout: float = 600.0
    bare_newline: BareNewline = BareNewline.REJECT
    auth_failures_allowed: int = 5  # per client IP within auth_failure_window
    auth_failure_window: float = 300.0
    metrics_listen: ListenAddress | None = None
    processes: int = 1  # inbound processes; the limits above are for all of them together
    _routes: dict[str, InboundRoute] = field(default_factory=dict, repr=False)
    # Recipient spellings already parsed: a message asks route_for its recipients about five
    # times (RCPT, policy, DATA, each copy), each time through the address parser.
    _route_memo: dict[str, InboundRoute | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def route_for(self, recipient: str) -> InboundRoute | None:
        """The support address a recipient belongs to, or None (refuse: never an open relay)."""
        memo = self._route_memo
        if recipient in memo:
            return memo[recipient]
        try:
            route = self._routes.get(_key(parse_address(recipient)))
        except UsageError:
            route = None
        if len(memo) >= ROUTE_MEMO_SIZE:
            memo.clear()  # a client naming many strangers cannot grow it
        memo[recipient] = route
        return route

    def sender_address(self, sender: str) -> SupportAddress | None:
        """The support address the help desk replies as, if it can send out (has a server)."""
        route = self.route_for(sender)
        if route is None or route.address.outbound is None:
            return None
        return route.address

    def inbound_credentials(self, now: datetime | None = None) -> list[Credential]:
        """The logins the customers' servers may authenticate with at ``now``, each scoped to the
        addresses whose ``[addresses.inbound]`` holds that same user name *and* hash:
        ``add-address`` with an existing ``--inbound-username`` shares the hash, so sharing a
        login is explicit. A user name that appears with two hashes (hand-edited) is two logins;
        the password decides. A rotated-out hash counts for an address only until its grace
        ends; it is asked at every login, so the old password stops working on time without a
        reload. It is marked ``previous`` when some address of its scope is rotating away from it."""
        now = now or datetime.now(UTC)
        scopes: dict[tuple[str, str], set[str]] = {}
        previous: set[tuple[str, str]] = set()
        for entry in self.profile.addresses:
            if entry.inbound is None:
                continue
            for hash_, is_previous in entry.inbound.valid_hashes(now):
                login = (entry.inbound.username, hash_)
                scopes.setdefault(login, set()).add(_key(entry.address))
                if is_previous:
                    previous.add(login)
        return [
            Credential(u, h, frozenset(keys), previous=(u, h) in previous)
            for (u, h), keys in scopes.items()
        ]

    def submission_credentials(self, now: datetime | None = None) -> list[Credential]:
        """The help desk's login on the submission listener (none unless configured), and the
        password a rotation replaced while its grace lasts."""
        if self.submission_username is None or self.submission_password_hash is None:
            return []
        logins = [Credential(self.submission_username, self.submission_password_hash)]
        relay = self.profile.relay
        until = relay.submission_previous_valid_until if relay else None
        old_hash = relay.submission_previous_password_hash if relay else None
        if old_hash is not None and until is not None and (now or datetime.now(UTC)) < until:
            logins.append(Credential(self.submission_username, old_hash, previous=True))
        return logins

    @property
    def submission_auth(self) -> bool:
        return self.submission_username is not None and self.submission_password_hash is not None

    @property
    def sink_context(self) -> SinkContext:
        """What a sink may know of the relay besides its own ``[relay.sink]`` settings."""
        return SinkContext(
            hostname=self.hostname,
            timeout=self.sink_timeout,
            base_dir=self.base_dir,
            ca_file=self.settings.ca_file,
        )


def _key(address: MailAddress) -> str:
    # Domains are case-insensitive; local parts are matched case-insensitively too because
    # forwarding MTAs routinely change their case and a miss here would refuse real mail.
    return address.ascii.lower()


def _path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    # Absolute, so logs and --check name the real place whatever the profile path looked like.
    return path if path.is_absolute() else base_dir.absolute() / path


def _effective_values(relay: RelaySettings, overrides: RelayOverrides) -> dict[str, Any]:
    """The command-line-overridable keys: the option's value when given, else the profile's;
    each refused here when its kind must be positive, whichever of the two it came from."""
    pick: dict[str, Any] = {}
    for declared in declared_keys(RelaySettings):
        if not declared.cli:
            continue
        given = getattr(overrides, declared.name)
        value = pick[declared.name] = given if given is not None else getattr(relay, declared.name)
        refusal = declared.kind.start_refusal
        if refusal is not None and value <= 0:
            raise UsageError(refusal.format(key=declared.name, option=declared.option))
    return pick


def build_config(
    profile: Profile,
    base_dir: Path,
    settings: Settings | None = None,
    overrides: RelayOverrides | None = None,
) -> RelayConfig:
    """Resolve the profile's ``[relay]`` table (or its defaults) with ``overrides`` applied."""
    settings = settings or Settings()
    o = overrides or RelayOverrides()
    r = profile.relay or RelaySettings()
    pick = _effective_values(r, o)
    if (pick["tls_cert"] is None) != (pick["tls_key"] is None):
        raise UsageError(
            "relay.tls_cert and relay.tls_key must be given together",
            fix="set both to PEM files (certificate chain and its private key)",
        )
    if r.max_memory < pick["max_message_size"]:
        raise UsageError(
            f"relay.max_memory ({r.max_memory} bytes) is smaller than max_message_size "
            f"({pick['max_message_size']} bytes): no message of the largest size could arrive",
            fix="raise max_memory or lower max_message_size",
        )
    sink = r.sink
    if sink.kind == SinkKind.MAILDIR:
        sink = replace(sink, path=str(_path(sink.path or "maildir", base_dir)))
    routes = {_key(e.address): InboundRoute(e) for e in profile.addresses}
    hostname = pick["hostname"] or profile.connector.ehlo_name or socket.getfqdn()
    return RelayConfig(
        profile=profile,
        base_dir=base_dir,
        settings=settings,
        inbound_listen=parse_listen(pick["inbound_listen"], what="inbound-listen"),
        submission_listen=parse_listen(pick["submission_listen"], what="submission-listen"),
        inbound_tls_listen=(
            parse_listen(pick["inbound_tls_listen"], what="inbound-tls-listen")
            if pick["inbound_tls_listen"]
            else None
        ),
        tls_cert=_path(pick["tls_cert"], base_dir) if pick["tls_cert"] else None,
        tls_key=_path(pick["tls_key"], base_dir) if pick["tls_key"] else None,
        spool_dir=_path(pick["spool"], base_dir),
        hostname=hostname,
        max_message_size=int(pick["max_message_size"]),
        sink=sink,
        sink_timeout=float(sink.timeout or DEFAULT_SINK_TIMEOUT),
        retry_initial=float(pick["retry_initial"]),
        retry_window=float(pick["retry_window"]),
        max_connections_per_ip=int(pick["max_connections_per_ip"]),
        max_sessions=r.max_sessions,
        max_memory=r.max_memory,
        idle_timeout=r.idle_timeout,
        data_timeout=r.data_timeout,
        bare_newline=r.bare_newline,
        submission_username=r.submission_username,
        submission_password_hash=r.submission_password_hash,
        metrics_listen=(
            parse_listen(r.metrics_listen, what="metrics_listen") if r.metrics_listen else None
        ),
        processes=resolve_processes(pick["processes"]),
        _routes=routes,
    )


def check_config(config: RelayConfig) -> list[str]:
    """Problems that stop the relay from working safely (empty list = ready). ``--check`` and
    start-up both use it, so a relay never starts in a state it would refuse to check."""
    return [problem for finder in _PROBLEM_FINDERS for problem in finder(config)]


def _tls_problems(config: RelayConfig) -> list[str]:
    if config.tls_cert is None:
        return _tls_missing_problems(config)
    from smtpconn.net import make_server_tls_context

    assert config.tls_key is not None
    unreadable = [
        problem
        for what, path in (
            ("relay.tls_cert", config.tls_cert),
            ("relay.tls_key", config.tls_key),
        )
        if (problem := _unreadable_file(path, what))
    ]
    if unreadable:
        return unreadable
    try:
        make_server_tls_context(config.tls_cert, config.tls_key)
    except UsageError:
        return [
            f"relay.tls_cert {config.tls_cert} / relay.tls_key {config.tls_key}: not a PEM "
            "certificate chain and its matching private key"
        ]
    return []


def _tls_missing_problems(config: RelayConfig) -> list[str]:
    """What needs a certificate when none is configured."""
    problems: list[str] = []
    needs_tls = any(InboundRoute(e).needs_auth for e in config.profile.addresses)
    if needs_tls:
        problems.append(
            "bidirectional addresses need TLS (AUTH is never accepted in clear text): "
            "set relay.tls_cert and relay.tls_key"
        )
    if config.inbound_tls_listen is not None:
        problems.append("relay.inbound_tls_listen needs relay.tls_cert and relay.tls_key")
    if config.submission_auth and not is_loopback(config.submission_listen):
        problems.append("submission AUTH needs relay.tls_cert and relay.tls_key")
    return problems


def _submission_exposure_problems(config: RelayConfig) -> list[str]:
    if is_loopback(config.submission_listen) or config.submission_auth:
        return []
    return [
        f"submission_listen {config.submission_listen} is not a loopback address and has "
        "no AUTH: anyone reaching it could send as your support addresses; keep it on "
        "127.0.0.1 or set submission_username / submission_password_hash"
    ]


def _address_problems(config: RelayConfig) -> list[str]:
    """Each address's outbound secret, then its DKIM key (address by address, in profile order)."""
    from smtpconn.profile.credentials import check_references

    problems: list[str] = []
    for entry in config.profile.addresses:
        if entry.outbound is not None:
            try:
                check_references(entry.outbound, config.base_dir)
            except UsageError as exc:
                problems.append(f"{entry.address.display}: {exc.message}")
        if entry.dkim is not None and not entry.dkim.server_signs:
            problem = _dkim_problem(entry, config.base_dir)
            if problem:
                problems.append(f"{entry.address.display}: {problem}")
    return problems


def _spool_problems(config: RelayConfig) -> list[str]:
    if problem := unwritable_dir(config.spool_dir):
        return [f"relay.spool {config.spool_dir}: {problem}"]
    return []


def _sink_problems(config: RelayConfig) -> list[str]:
    return sink_problems(config.sink, config.sink_context)


# In the order --check lists their problems.
_PROBLEM_FINDERS: tuple[Callable[[RelayConfig], list[str]], ...] = (
    _tls_problems,
    _submission_exposure_problems,
    _address_problems,
    _spool_problems,
    _sink_problems,
)


def _unreadable_file(path: Path, what: str) -> str | None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except IsADirectoryError:
        return f"{what} {path}: is a folder, not a PEM file"
    except OSError as exc:
        return f"{what} {path}: cannot be read ({exc.strerror})"
    return None


def _dkim_problem(entry: SupportAddress, base_dir: Path) -> str | None:
    from smtpconn.profile.wire import load_dkim_key
    from smtpconn.smtp.dkim import dkim_sign

    try:
        key = load_dkim_key(entry, base_dir)
        if key is not None:  # a trial signature: the key must load, not merely exist
            dkim_sign(f"From: <{entry.address.ascii}>\r\n\r\n.\r\n".encode(), key)
    except UsageError as exc:
        return exc.message
    return None
