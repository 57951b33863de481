"""What ``/metrics`` and ``/readyz`` report, kept in a registry of this relay's own (never the
process-wide default one, so two relays in one process or a test never mix their counts).

Counts come from the relay's log events (``relay.log.OBSERVERS``), like the status file, so the
listeners and workers do not know metrics exist. Gauges that describe the present (queue depth,
the oldest message's age, certificate expiry) are read when scraped.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from smtpconn.relay.log import SESSION_OPENED_EVENT
from smtpconn.relay.shards import find_anywhere, spool_family
from smtpconn.relay.spool import DIRECTIONS, Spool
from smtpconn.relay.state import TOKEN_EVENT, token_expiry

if TYPE_CHECKING:
    from smtpconn.relay.config import RelayConfig

# event -> (direction, outcome) of smtpconn_messages_total
_MESSAGE_EVENTS = {
    "inbound.accepted": ("inbound", "accepted"),
    "inbound.delivered": ("inbound", "delivered"),
    "inbound.deferred": ("inbound", "deferred"),
    "inbound.held": ("inbound", "held"),
    "submission.accepted": ("outbound", "accepted"),
    "outbound.delivered": ("outbound", "delivered"),
    "outbound.deferred": ("outbound", "deferred"),
    "outbound.bounced": ("outbound", "bounced"),
}
_ID_CACHE = 10_000
DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, float("inf"))

# (support address, tag) of a spool id, from the spool entry when the id is new to us.
Labeller = Callable[[str, dict[str, Any]], tuple[str, str]]


@dataclass
class SinkHealth:
    """The sink's last answer: a hand-over that failed after the last one that worked means
    the sink does not answer now (``/readyz`` says so until one works again)."""

    last_ok: float = 0.0
    last_error: float = 0.0
    error: str = ""

    @property
    def answering(self) -> bool:
        return self.last_error <= self.last_ok


class RelayMetrics:
    def __init__(self, spool: Spool, config: Callable[[], RelayConfig]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.spool = spool
        self.config = config
        self.sink = SinkHealth()
        self._labels: dict[str, tuple[str, str]] = {}
        self.token_expires: dict[str, float] = {}  # support address -> its OAuth token's expiry
        self.throttled_until: dict[str, float] = {}  # outbound lane (host:port) -> back-off end
        self.messages = Counter(
            "smtpconn_messages",
            "Messages by direction, support address, tag and outcome",
            ("direction", "address", "tag", "outcome"),
            registry=self.registry,
        )
        self.sessions = Counter(
            "smtpconn_sessions", "SMTP sessions opened", ("listener",), registry=self.registry
        )
        self.auth_failures = Counter(
            "smtpconn_auth_failures", "Failed logins", ("listener",), registry=self.registry
        )
        self.sink_delay = Histogram(
            "smtpconn_sink_delivery_seconds",
            "From acceptance to the sink's confirmation, per inbound copy",
            buckets=DELAY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PresentCollector(self))

    def session_opened(self, listener: str) -> None:
        self.sessions.labels(listener).inc()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event == SESSION_OPENED_EVENT:  # a shard child's session (the main counts its own)
            self.session_opened(str(fields.get("listener") or "inbound"))
            return
        if event == TOKEN_EVENT:
            address, expires = token_expiry(fields)
            if address is not None and expires is not None:
                self.token_expires[address] = expires
            return
        if event == "outbound.throttled":
            with contextlib.suppress(ValueError):
                until = datetime.fromisoformat(str(fields.get("until"))).timestamp()
                self.throttled_until[str(fields.get("server") or "-")] = until
            return
        if event == "auth.failed":
            self.auth_failures.labels(str(fields.get("listener") or "-")).inc()
            return
        found = _MESSAGE_EVENTS.get(event)
        if found is None:
            return
        direction, outcome = found
        address, tag = self._label(event, fields)
        count = (
            len(str(fields.get("rcpts") or "").split(",")) if event == "outbound.deferred" else 1
        )
        self.messages.labels(direction, address, tag, outcome).inc(count)
        if event == "inbound.delivered":
            self.sink.last_ok = time.time()
            delay = fields.get("delay")
            if isinstance(delay, int | float):
                self.sink_delay.observe(max(0.0, float(delay)))
        elif event in ("inbound.deferred", "inbound.held"):
            self.sink.last_error = time.time()
            self.sink.error = str(fields.get("error") or "")[:300]

    def _label(self, event: str, fields: dict[str, Any]) -> tuple[str, str]:
        entry_id = str(fields.get("id") or "")
        known = self._labels.get(entry_id)
        if known is not None:
            return known
        address, tag = "-", str(fields.get("tag") or "-")
        entry = find_anywhere(self.spool, entry_id) if entry_id else None
        if entry is not None:
            address = str(entry.envelope.meta.get("support_address") or "-")
            tag = str(entry.envelope.meta.get("tag") or tag)
        elif event == "inbound.accepted":
            route = self.config().route_for(str(fields.get("rcpt") or ""))
            address = route.address.address.ascii if route else "-"
        if entry_id:
            if len(self._labels) >= _ID_CACHE:
                self._labels.clear()
            self._labels[entry_id] = (address, tag)
        return address, tag


class _PresentCollector(Collector):
    """Queue depth, the oldest message's age, certificate and OAuth token expiry, read at each
    scrape."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "smtpconn_queue_depth", "Messages in the spool", labels=("direction",)
        )
        oldest = GaugeMetricFamily(
            "smtpconn_queue_oldest_age_seconds",
            "Age of the oldest message in the spool (0 when empty)",
            labels=("direction",),
        )
        now = time.time()
        family = spool_family(self.metrics.spool)  # with its shards ([relay] processes)
        for direction in DIRECTIONS:
            ids = [i for part in family for i in part.ids(direction)]
            depth.add_metric((direction,), len(ids))
            born = [t for t in (_spooled_at(i) for i in ids) if t is not None]
            oldest.add_metric((direction,), max(0.0, now - min(born)) if born else 0.0)
        yield depth
        yield oldest
        expiry = GaugeMetricFamily(
            "smtpconn_tls_certificate_expiry_seconds",
            "Seconds until the relay's certificate expires (negative: expired)",
            labels=("certificate",),
        )
        cert = self.metrics.config().tls_cert
        left = certificate_seconds_left(cert) if cert is not None else None
        if cert is not None and left is not None:
            expiry.add_metric((str(cert),), left)
        yield expiry
        yield self._token_expiry(now)
        throttled = GaugeMetricFamily(
            "smtpconn_outbound_throttled_seconds",
            "Seconds until an outbound server's lane may send again after a throttling reply "
            "(0: not throttled)",
            labels=("server",),
        )
        for server, until in sorted(self.metrics.throttled_until.items()):
            throttled.add_metric((server,), max(0.0, until - now))
        yield throttled

    def _token_expiry(self, now: float) -> GaugeMetricFamily:
        tokens = GaugeMetricFamily(
            "smtpconn_oauth_token_expiry_seconds",
            "Seconds until the last OAuth token obtained for an address expires (negative: "
            "expired; a new one is fetched before the next delivery)",
            labels=("address",),
        )
        # Only addresses still in the profile: a removed one's last token says nothing now.
        current = {entry.address.ascii for entry in self.metrics.config().profile.addresses}
        for address, expires in sorted(self.metrics.token_expires.items()):
            if address in current:
                tokens.add_metric((address,), expires - now)
        return tokens


def _spooled_at(entry_id: str) -> float | None:
    # Spool ids start with the nanosecond time they were made (spool.new_id).
    head = entry_id.partition(".")[0]
    return int(head) / 1e9 if head.isdigit() else None


_CERT_CACHE: dict[tuple[Path, int, int], float] = {}


def certificate_seconds_left(path: Path, now: float | None = None) -> float | None:
    """Seconds until the first certificate in the PEM file ``path`` expires; None if unreadable."""
    from smtpconn.smtp.certinfo import summarise_certificate

    try:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in _CERT_CACHE:
            pem = path.read_text("ascii", "replace")
            end = "-----END CERTIFICATE-----"
            first = pem[pem.index("-----BEGIN CERTIFICATE-----") : pem.index(end) + len(end)]
            summary = summarise_certificate(ssl.PEM_cert_to_DER_cert(first))
            _CERT_CACHE[key] = summary.not_after.timestamp()
        return _CERT_CACHE[key] - (time.time() if now is None else now)
    except (OSError, ValueError):
        return None


def readiness(config: RelayConfig, serving: bool, sink: SinkHealth) -> list[str]:
    """Why the relay is not ready (empty: ready): listeners, spool, sink, certificate."""
    from smtpconn.relay.folders import unwritable_dir
    from smtpconn.relay.sinks import sink_problems

    problems = [] if serving else ["the SMTP listeners are not serving"]
    if problem := unwritable_dir(config.spool_dir):
        problems.append(f"spool {config.spool_dir}: {problem}")
    problems += [f"sink: {p}" for p in sink_problems(config.sink, config.sink_context)]
    if not sink.answering:
        problems.append(f"sink: the last hand-over failed: {sink.error}")
    left = certificate_seconds_left(config.tls_cert) if config.tls_cert is not None else None
    if left is not None and left <= 0:
        problems.append(f"certificate {config.tls_cert} expired")
    return problems
