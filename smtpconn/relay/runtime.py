"""The relay runtime: both listeners, the spool workers, start and clean stop.

Library entry point (for ``smtpconn relay`` and for tests that need a running relay)::

    from smtpconn.relay.runtime import Relay, RelayOverrides

    relay = Relay.from_profile_file(
        Path("smtpconn.toml"),
        settings=Settings(resolvers=(("127.0.0.1", dns_port),), ca_file=lab_ca, timeout=5),
        overrides=RelayOverrides(
            inbound_listen="127.0.0.1:0",      # port 0: pick a free port
            submission_listen="127.0.0.1:0",
            spool=str(tmp_path / "spool"),
        ),
    )
    await relay.start()                 # listening and delivering when this returns
    relay.inbound_port, relay.submission_port   # the bound ports
    relay.inbound_tls_port                # implicit-TLS port, or None when not configured
    await relay.wait_idle(timeout=30)   # True once the spool is empty (all delivered/bounced)
    await relay.stop()                  # stop accepting, finish sessions in flight, stop workers

``Relay`` is also an async context manager (``async with Relay(...) as relay:``).
``Relay(config)`` takes a ready :class:`smtpconn.relay.config.RelayConfig`; ``Relay.from_profile_file``
loads the profile and applies the overrides (the same names as the ``[relay]`` keys and the
command-line flags).

As a subprocess: ``python -m smtpconn relay --profile P --inbound-listen 127.0.0.1:0
--submission-listen 127.0.0.1:0``; once listening it logs one line on stderr::

    event=relay.ready inbound=127.0.0.1:40123 submission=127.0.0.1:40124 inbound_tls=- spool=...

SIGTERM (or SIGINT) stops it cleanly: listeners close, sessions in flight finish (up to a grace
period), the workers finish the delivery at hand; nothing acknowledged is lost even on SIGKILL.

SIGHUP (or ``smtpconn relay --reload``) re-reads the profile (:meth:`Relay.reload`): addresses
and credentials apply to sessions that start afterwards, sessions in progress keep the handler
they started with; an invalid profile is refused with one log line and the running one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from smtpconn.errors import UsageError
from smtpconn.relay.acceptor import (
    AcceptGate,
    SessionBoard,
    SharedListener,
    adopt,
    bind_shared,
)
from smtpconn.relay.config import (
    ListenAddress,
    RelayConfig,
    RelayOverrides,
    build_config,
    check_config,
    share,
)
from smtpconn.relay.log import SESSION_OPENED_EVENT, log_event, notify_observers
from smtpconn.relay.outbound import Deliverer
from smtpconn.relay.server import CredentialChecker, RelayLimits, RelaySMTP, SessionTracker
from smtpconn.relay.sessions import SessionPool
from smtpconn.relay.shards import ShardRole, ShardSupervisor, shard_dir, spool_family
from smtpconn.relay.spool import DIRECTIONS, Spool, SpoolEntry
from smtpconn.relay.state import StatusRecorder

if TYPE_CHECKING:
    from smtpconn.relay.httpd import HealthServer
    from smtpconn.relay.metrics import RelayMetrics
from smtpconn.relay.lanes import LANES_FILE, Lanes
from smtpconn.relay.worker import QueueWorker
from smtpconn.settings import Settings

__all__ = ["Relay", "RelayConfig", "RelayOverrides"]

# Deliveries at once per direction. Remote peers (webhook, SMTP forward, the customer's server)
# get few parallel connections, as any MTA would; a sink may ask for more (its `concurrency`).
DEFAULT_CONCURRENCY = 4
# Outbound deliveries at once over all servers' lanes together; each lane has its own limit
# (max_connections, else DEFAULT_LANE_CONCURRENCY), so a slow or throttled server cannot take
# the slots the others need.
OUTBOUND_CONCURRENCY = 16
# Seconds the main waits for its shard children to listen before it says it is ready.
SHARDS_READY_TIMEOUT = 10.0


class Relay:
    def __init__(
        self,
        config: RelayConfig,
        *,
        deliverer: Deliverer | None = None,
        shutdown_grace: float = 30.0,
        poll: float = 1.0,
        shard: ShardRole | None = None,
        shard_command: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        # A shard child (processes > 1) works on its own spool shard; the main on the spool.
        self.shard = shard
        self.spool = Spool(shard_dir(config.spool_dir, shard.index) if shard else config.spool_dir)
        # How the main starts its shard children (None: it starts none, whatever `processes`).
        self.shard_command = shard_command
        self.shards: ShardSupervisor | None = None
        self.shutdown_grace = shutdown_grace
        self.poll = poll
        self._deliverer = deliverer
        self._servers: list[asyncio.base_events.Server | SharedListener] = []
        # processes > 1: the inbound listeners' sockets, shared with the shard children
        self._shared_fds: dict[str, tuple[int, ...]] = {}
        self._gate: AcceptGate | None = None
        self._trackers: list[SessionTracker] = []
        # One budget for all listeners: the caps are on the process, not on each port. With
        # several processes each takes its share, so together they keep the administrator's.
        self.process_count = config.processes if shard or shard_command else 1
        self.limits = RelayLimits(
            share(config.max_sessions, self.process_count),
            # never below one message of the largest size, or none of that size could arrive
            max(share(config.max_memory, self.process_count), config.max_message_size),
        )
        self._workers: dict[str, QueueWorker] = {}
        self._sessions: SessionPool | None = None  # outbound connection cache
        self.lanes: Lanes | None = None  # outbound, one per customer server
        self.inbound_port = 0
        self.submission_port = 0
        self.inbound_tls_port: int | None = None
        self._started = False
        # Where a reload reads the profile again (None: this relay cannot reload).
        self.reload_source: Callable[[], RelayConfig] | None = None
        # The handler each listener gives sessions that start now: a reload replaces them, a
        # session keeps the one it started with.
        self._handlers: dict[str, Any] = {}
        self._checkers: dict[str, CredentialChecker] = {}
        self._processes: list[Any] = []  # the workers' delivery steps, which read the config
        self._sink: Any = None  # closed at stop (the Maildir sink's delivery agent)
        self._started_config = config  # what the listeners, spool and sink were made from
        self._reload_lock = asyncio.Lock()  # one reload at a time, in signal order
        self._status: StatusRecorder | None = None
        self.metrics: RelayMetrics | None = None  # with [relay] metrics_listen
        self._health: HealthServer | None = None
        self.metrics_port: int | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._settle_task: asyncio.Task[None] | None = None

    @classmethod
    def from_profile_file(
        cls,
        path: Path,
        *,
        settings: Settings | None = None,
        overrides: RelayOverrides | None = None,
        **kwargs: Any,
    ) -> Relay:
        from smtpconn.profile.store import load_profile

        def load() -> RelayConfig:
            loaded = load_profile(path)
            return build_config(loaded.profile, loaded.base_dir, settings, overrides)

        relay = cls(load(), **kwargs)
        relay.reload_source = load
        return relay

    # -- start ------------------------------------------------------------------------------

    async def start(self) -> None:
        problems = check_config(self.config)
        if problems:
            raise UsageError(
                "the relay cannot start:\n  " + "\n  ".join(problems),
                fix="correct the profile's [relay] table or the overrides (see config.check_config)",
            )
        from smtpconn.relay.handover import SinkHandover
        from smtpconn.relay.sinks import make_sink

        await self._lock_spool()
        self._sessions = SessionPool()
        try:
            sink = self._sink = make_sink(self.config.sink, self.config.sink_context)
            handover = SinkHandover(self.config, self.spool, sink)
            self._processes = [handover]
            self._workers["inbound"] = QueueWorker(
                self.spool,
                "inbound",
                handover,
                concurrency=sink.concurrency or DEFAULT_CONCURRENCY,
                poll=self.poll,
            )
            if self.shard is None:  # a shard child never has outbound mail
                self._make_outbound()
            await self._listen()
        except BaseException:
            await self._close_servers()
            await self._close_sink()
            self.spool.unlock()
            raise
        for worker in self._workers.values():
            worker.start()
        self._settle_task = asyncio.get_running_loop().create_task(self._settle_slots())
        self._started = True
        self._started_config = self.config
        if self.shard is not None:
            log_event(
                "relay.shard-ready",
                shard=self.shard.index,
                inbound=None if self.shard.drain else self.inbound_port,
                spool=str(self.spool.directory),
            )
            return
        self._start_status()
        await self._start_metrics()
        await self._start_shards()
        log_event(
            "relay.ready",
            inbound=f"{self.config.inbound_listen.host}:{self.inbound_port}",
            submission=f"{self.config.submission_listen.host}:{self.submission_port}",
            inbound_tls=(
                f"{self.config.inbound_tls_listen.host}:{self.inbound_tls_port}"
                if self.config.inbound_tls_listen
                else None
            ),
            spool=str(self.config.spool_dir),
            sink=self.config.sink.kind,
            addresses=len(self.config.profile.addresses),
        )

    async def _lock_spool(self) -> None:
        """Take the spool's lock. A shard child waits for it up to the shutdown grace: the
        child of a main that was killed may still be finishing its sessions on this shard."""
        from smtpconn.relay.spool import SpoolLocked

        deadline = time.monotonic() + (self.shutdown_grace if self.shard else 0.0)
        while True:
            try:
                await asyncio.to_thread(self.spool.lock)
                return
            except SpoolLocked:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.2)

    def _make_outbound(self) -> None:
        from smtpconn.relay.outbound import OutboundDelivery
        from smtpconn.smtp.session import secure_client_context

        assert self._sessions is not None
        client_tls = secure_client_context(
            self.config.settings.ca_file, insecure=self.config.settings.insecure
        )
        self.lanes = Lanes(lambda: self.config, self.config.spool_dir / LANES_FILE)
        delivery = OutboundDelivery(
            self.config,
            self.spool,
            self._deliverer or self._sessions,
            client_tls,
            self.wake,
            self.lanes,
        )
        self._processes.append(delivery)
        self._workers["outbound"] = QueueWorker(
            self.spool,
            "outbound",
            delivery,
            concurrency=OUTBOUND_CONCURRENCY,
            poll=self.poll,
            lanes=self.lanes,
        )

    async def _start_shards(self) -> None:
        """The shard children, once this process listens (they get its sockets); ready is said
        once they listen too (or after SHARDS_READY_TIMEOUT, with the ones that do not)."""
        if self.shard_command is None:
            return
        self.shards = ShardSupervisor(
            self.shard_command,
            self.config.spool_dir,
            self.process_count,
            (self._shared_fds.get("inbound", ()), self._shared_fds.get("inbound-tls")),
            board_fd=self._gate.board.fd if self._gate and self._gate.board else None,
            child_gone=self._gate.board.forget if self._gate and self._gate.board else None,
        )
        self.shards.start()
        late = await self.shards.ready(SHARDS_READY_TIMEOUT)
        if late:
            log_event("relay.shards-late", logging.WARNING, shards=",".join(map(str, late)))

    def _server_tls(self) -> ssl.SSLContext | None:
        from smtpconn.net import make_server_tls_context

        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        return make_server_tls_context(self.config.tls_cert, self.config.tls_key)

    def _make_handlers(self, config: RelayConfig) -> dict[str, Any]:
        from smtpconn.relay.inbound import InboundHandler
        from smtpconn.relay.outbound import SubmissionHandler

        handlers: dict[str, Any] = {"inbound": InboundHandler(config, self.spool, self.wake)}
        if self.shard is None:
            handlers["submission"] = SubmissionHandler(config, self.spool, self.wake)
        return handlers

    def _checker(self, kind: str) -> CredentialChecker | None:
        """The listener kind's checker, or None when it takes no AUTH. The checkers outlive a
        reload (a brute-force block must not end with one) and ask the current config for the
        logins at every check."""
        if kind == "submission" and not self.config.submission_auth:
            return None
        return self._checkers[kind]

    async def _listen(self) -> None:
        config = self.config
        tls = self._server_tls()
        self._handlers = self._make_handlers(config)
        for kind, logins in (
            ("inbound", lambda: self.config.inbound_credentials()),
            ("submission", lambda: self.config.submission_credentials()),
        ):
            self._checkers[kind] = CredentialChecker(
                logins,
                # per process: each counts the failures its own sessions see
                failures_allowed=share(config.auth_failures_allowed, self.process_count),
                window=config.auth_failure_window,
            )
        shard = self.shard
        if shard is not None and shard.drain:
            return  # it only empties its shard
        inbound, inbound_tls = config.inbound_listen, config.inbound_tls_listen
        if shard is not None and shard.inbound_tls_fds is None:
            inbound_tls = None  # the main has none to share
        self.inbound_port = await self._serve("inbound", "inbound", inbound, tls, implicit=False)
        if inbound_tls is not None:
            self.inbound_tls_port = await self._serve(
                "inbound-tls", "inbound", inbound_tls, tls, implicit=True
            )
        if shard is None:
            self.submission_port = await self._serve(
                "submission", "submission", config.submission_listen, tls, implicit=False
            )

    async def _serve(
        self,
        name: str,
        kind: str,
        listen: ListenAddress,
        tls: ssl.SSLContext | None,
        *,
        implicit: bool,
    ) -> int:
        tracker = SessionTracker(
            share(self.config.max_connections_per_ip, self.process_count), self.limits
        )
        self._trackers.append(tracker)

        def factory() -> RelaySMTP:
            # Read at connection time: a session runs under the settings it started with.
            config = self.config
            if self.metrics is not None:
                self.metrics.session_opened(name)
            elif self.shard is not None:  # counted by the main's metrics, through the pipe
                notify_observers(SESSION_OPENED_EVENT, listener=name)
            return RelaySMTP(
                self._handlers[kind],
                checker=self._checker(kind),
                tracker=tracker,
                listener=name,
                implicit_tls=implicit,
                hostname=config.hostname,
                ident="smtpconn relay",
                tls_context=None if implicit else tls,
                data_size_limit=config.max_message_size,
                timeout=config.idle_timeout,
                data_timeout=config.data_timeout,
                bare_newline=config.bare_newline,
                loop=asyncio.get_running_loop(),
            )

        try:
            if self.process_count > 1 and kind == "inbound":
                server: asyncio.base_events.Server | SharedListener = await self._shared(
                    name, listen, factory, tls if implicit else None
                )
            else:
                server = await asyncio.get_running_loop().create_server(
                    factory,
                    host=listen.host,
                    port=listen.port,
                    ssl=tls if implicit else None,
                    reuse_address=True,
                )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {listen} ({name}): {exc.strerror}",
                fix=f"choose another address with --{name}-listen or stop what uses it",
            ) from None
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _shared(
        self,
        name: str,
        listen: ListenAddress,
        factory: Callable[[], RelaySMTP],
        tls: ssl.SSLContext | None,
    ) -> SharedListener:
        """An inbound listener on the accept queue all processes share: the main binds it and
        keeps the sockets for its children (a child started again gets them again); a child
        takes the ones the main passed it."""
        if self.shard is None:
            sockets = await bind_shared(listen.host, listen.port)
            self._shared_fds[name] = tuple(s.fileno() for s in sockets)
        else:
            fds = self.shard.inbound_fds if name == "inbound" else self.shard.inbound_tls_fds
            sockets = adopt(fds or ())
        if self._gate is None:
            # The main keeps taking connections when full (421 from the tracker): a client is
            # never left in the queue when every process is full. A full child stops reading.
            self._gate = AcceptGate(
                self.limits, overflow=self.shard is None, board=self._session_board()
            )
            self.limits.on_session_end.append(self._gate.changed)
        return SharedListener(sockets, factory, self._gate, name=name, tls=tls)

    def _session_board(self) -> SessionBoard | None:
        """Where the processes publish their session counts: the main creates it, a child maps
        the one the main passed (None if it passed none: the child takes what comes)."""
        if self.shard is None:
            return SessionBoard.create(self.process_count)
        if self.shard.board_fd is None:
            return None
        return SessionBoard.join(self.shard.board_fd, self.shard.index)

    def _start_status(self) -> None:
        """Record per-address outcomes in ``<spool>/status.json`` for ``smtpconn status``."""
        from smtpconn.relay.log import OBSERVERS
        from smtpconn.relay.state import STATUS_FILE, spool_address_of

        self._status = StatusRecorder(
            self.config.spool_dir / STATUS_FILE, spool_address_of(self.spool, lambda: self.config)
        )
        OBSERVERS.append(self._status)
        self._status_task = asyncio.get_running_loop().create_task(self._write_status())

    async def _write_status(self, every: float = 1.0) -> None:
        assert self._status is not None
        while True:
            try:
                await asyncio.to_thread(self._status.flush_file)
                await self._write_lanes()
            except OSError as exc:  # advisory: a full disk must not stop deliveries
                log_event("relay.status-failed", logging.WARNING, error=exc.strerror)
            await asyncio.sleep(every)

    async def _settle_slots(self, every: float = 1.0) -> None:
        """About once a second, in every process (a shard child too): the slots of messages
        spooled since are given up, their queue names alone from now on (spool.py: 4)."""
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.spool.settle)
            except OSError as exc:  # the slot keeps the message meanwhile; try again later
                log_event("relay.settle-failed", logging.WARNING, error=exc.strerror)

    async def _stop_settling(self) -> None:
        if self._settle_task is None:
            return
        self._settle_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._settle_task
        self._settle_task = None
        with contextlib.suppress(OSError):  # a last one, so a clean stop leaves no slot name
            await asyncio.to_thread(self.spool.settle)

    async def _write_lanes(self, *, force: bool = False) -> None:
        document = self.lanes.dump(force=force) if self.lanes is not None else None
        if document is not None and self.lanes is not None:
            await asyncio.to_thread(self.lanes.write, document)

    async def _stop_status(self) -> None:
        from smtpconn.relay.log import OBSERVERS

        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if self._status is not None:
            OBSERVERS.remove(self._status)
            with contextlib.suppress(OSError):
                self._status.flush_file(running=False)
                await self._write_lanes(force=True)

    async def _start_metrics(self) -> None:
        from prometheus_client import generate_latest

        from smtpconn.relay.httpd import HealthServer
        from smtpconn.relay.log import OBSERVERS
        from smtpconn.relay.metrics import RelayMetrics, readiness

        if self.config.metrics_listen is None:
            return
        metrics = self.metrics = RelayMetrics(self.spool, lambda: self.config)
        OBSERVERS.append(metrics)

        def ready() -> list[str]:
            serving = self._started and all(s.is_serving() for s in self._servers)
            return readiness(self.config, serving, metrics.sink)

        self._health = HealthServer(
            self.config.metrics_listen, lambda: generate_latest(metrics.registry), ready
        )
        try:
            self.metrics_port = await self._health.start()
        except BaseException:
            await self.stop(grace=0)
            raise
        log_event("metrics.ready", listen=f"{self.config.metrics_listen.host}:{self.metrics_port}")

    async def _stop_metrics(self) -> None:
        from smtpconn.relay.log import OBSERVERS

        if self._health is not None:
            await self._health.stop()
        if self.metrics is not None and self.metrics in OBSERVERS:
            OBSERVERS.remove(self.metrics)

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Read the profile again and apply it to what starts from now on: sessions, logins,
        deliveries. A profile that does not load or would not start is refused with one log line
        (``relay.reload-refused``) and the running configuration stays. Listen addresses, the
        certificate, the spool, the sink and the per-IP limit need a restart; a reload that
        changes them says so (``restart_needed``). True when applied."""
        if self.shards is not None:  # each child re-reads the profile itself
            self.shards.reload()
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        from smtpconn.errors import SmtpconnError
        from smtpconn.relay.reload import needs_restart

        if self.reload_source is None or not self._started:
            return False
        try:
            config = await asyncio.to_thread(self.reload_source)
            problems = await asyncio.to_thread(check_config, config)
        except SmtpconnError as exc:
            problems = [exc.message]
        if problems:
            log_event("relay.reload-refused", logging.ERROR, reason="; ".join(problems))
            return False
        self._handlers = self._make_handlers(config)
        for process in self._processes:
            process.config = config
        self.config = config
        log_event(
            "relay.reloaded",
            addresses=len(config.profile.addresses),
            restart_needed=",".join(needs_restart(self._started_config, config)) or None,
        )
        return True

    # -- run ----------------------------------------------------------------------------------

    def wake(self, direction: str, entries: Sequence[SpoolEntry] | None = None) -> None:
        """Hand just-spooled ``entries`` to the direction's worker (or, without entries, make it
        look at the directory again)."""
        worker = self._workers.get(direction)
        if worker is None:
            return
        if entries is None:
            worker.wake()
        else:
            worker.add(entries)

    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once both spool directories are empty (everything delivered or bounced) and no
        delivery is in progress; False if that did not happen within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            empty = await asyncio.to_thread(self._spool_empty)
            if empty and not any(w.busy for w in self._workers.values()):
                return True
            await asyncio.sleep(0.05)
        return False

    def _spool_empty(self) -> bool:
        return not any(s.ids(d) for s in spool_family(self.spool) for d in DIRECTIONS)

    # -- stop ---------------------------------------------------------------------------------

    async def _close_servers(self) -> None:
        for server in self._servers:
            server.close()

    async def _close_sink(self) -> None:
        closer = getattr(self._sink, "aclose", None)
        if closer is not None:
            await closer()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; let sessions in a transaction and deliveries at hand finish."""
        if not self._started:
            return
        self._started = False
        grace = self.shutdown_grace if grace is None else grace
        log_event("relay.stopping", grace=grace)
        if self.shards is not None:
            self.shards.hold()
        await self._close_servers()
        await self._stop_metrics()
        await asyncio.gather(
            *(t.drain(grace) for t in self._trackers),
            *([self.shards.stop(grace)] if self.shards is not None else []),
        )
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await asyncio.gather(*(w.stop(grace) for w in self._workers.values()))
        await self._close_sink()
        if self._sessions is not None:
            await self._sessions.close()
        await self._stop_status()
        await self._stop_settling()
        if self._gate is not None and self._gate.board is not None:
            self._gate.board.close()
        self.spool.unlock()
        log_event("relay.stopped")

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _on_signals(relay: Relay) -> asyncio.Event:
    """SIGTERM/SIGINT set the returned event (stop); SIGHUP reloads the profile."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[bool]] = set()  # kept referenced until each is done

    def reload() -> None:
        task = loop.create_task(relay.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    return stop


async def run_until_signalled(relay: Relay) -> None:
    """``smtpconn relay``: start, then run until SIGTERM/SIGINT, then stop cleanly."""

    from smtpconn.relay.reload import pid_file

    stop = _on_signals(relay)
    if relay.shard_command is not None and relay.process_count > 1:
        from smtpconn.relay.log import CONTEXT

        CONTEXT.update(shard=0, pid=os.getpid())
    await relay.start()
    try:
        with pid_file(relay.config.spool_dir):
            await stop.wait()
    finally:
        await relay.stop()


async def run_shard(relay: Relay) -> None:
    """A shard child (``SMTPCONN_SHARD`` set by the main): serve until SIGTERM/SIGINT or until
    the main's end of stdin closes; a draining child until its shard is empty. Its events go to
    the main on stdout; it writes no pid or status file (the main's are the relay's)."""

    from smtpconn.relay.log import CONTEXT, OBSERVERS
    from smtpconn.relay.shards import EventPipe, parent_gone

    assert relay.shard is not None
    loop = asyncio.get_running_loop()
    stop = _on_signals(relay)
    CONTEXT.update(shard=relay.shard.index, pid=os.getpid())
    pipe = await EventPipe.open()
    OBSERVERS.append(pipe)
    ends: dict[asyncio.Task[Any], str] = {
        loop.create_task(stop.wait()): "signal",
        loop.create_task(parent_gone()): "main-gone",
    }
    try:
        await relay.start()
        if relay.shard.drain:
            ends[loop.create_task(relay.wait_idle(timeout=float("inf")))] = "drained"
        done, _ = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        log_event("relay.shard-stopping", reason=",".join(sorted(ends[t] for t in done)))
    finally:
        for task in ends:
            task.cancel()
        await relay.stop()
        OBSERVERS.remove(pipe)
        pipe.close()
