"""Relay throughput and memory, side by side with the lab's Postfix receiving the same load.

Inbound: the load generator (``benchmarks.loadgen``) plays the customer's server: STARTTLS, AUTH
with the inbound credentials, 10 KB messages to the support address. Against the relay (started
as a user starts it: ``python -m smtpconn relay``, durable spool as shipped, Maildir sink) and
against Postfix's submission port (STARTTLS + AUTH, delivering with virtual(8) to its Maildir).
Two rates per scenario: *accepted* (all ``250``s received) and *delivered* (until the last
message is a file in the Maildir), plus p50/p99 per-message latency.

Each inbound scenario runs as K interleaved rounds (5 by default, 1 with ``--quick``): a round
is one run against each server, the relay first in even rounds and Postfix first in odd ones,
so a drift of the machine's load over the section falls on both. A round's ratios compare its
two runs; a scenario reports the median (and min-max) of its rounds' ratios and each server's
median rates. Every run starts from the same state: neither server holds mail of an earlier run
(the relay's spool has no message, Postfix's queue none besides what was there before the
section), one quiet second has passed, and the messages earlier runs delivered are gone from the
Maildirs (so polling their count costs the same in every round).

Outbound: the help desk submits replies on the relay's loopback submission listener (one plain
session, no AUTH, 200 replies one after another); the relay spools them and delivers with
STARTTLS + AUTH to the customer's server (the lab Postfix, into its Maildir). Two peers, each
fed by the same generator:

* **Postfix in the relay's place** (``postfix_relay``, benchmarks/postfix_peer.py): a second
  Postfix instance set up as an admin sets up a smarthost client. The generator reaches its plain
  loopback listener exactly as it reaches the relay's (same code: ``submit_plain``); it queues
  each reply durably (Postfix's defaults: fsync before the ``250``) and relays it to
  ``[127.0.0.1]:<lab submission port>`` with STARTTLS required and AUTH as the lab user. Its
  ``main.cf`` has only these settings, everything else is Postfix 3.7's default (in particular
  ``in_flow_delay = 1s``, ``smtp_tls_connection_reuse = no``: a new TLS + AUTH session per
  delivery unless its connection cache kicks in, while smtpconn keeps one open):
  ``compatibility_level = 3.6``, ``queue_directory``, ``data_directory``, ``myhostname``,
  ``inet_interfaces = 127.0.0.1``, ``inet_protocols = ipv4``, ``maillog_file``,
  ``maillog_file_prefixes`` (where it runs), ``relayhost = [127.0.0.1]:<port>``,
  ``smtp_sasl_auth_enable = yes``, ``smtp_sasl_password_maps = hash:...``,
  ``smtp_sasl_security_options = noanonymous``, ``smtp_tls_security_level = encrypt``
  (relaying). ``master.cf``: one ``smtpd`` listener plus Debian's internal services, chroot
  off. smtpconn verifies the server's certificate; Postfix at ``encrypt`` does not. Each round
  checks that the replies reached the *lab* Postfix's Maildir and that the peer's log shows
  ``relay=127.0.0.1[127.0.0.1]:<port> ... status=sent`` for every one of them.
* **Direct** (``postfix_direct``): the same replies submitted straight to the lab Postfix
  (STARTTLS + AUTH) by the generator, i.e. no relay at all: smtpconn / direct is the cost of
  the hop, not a target.

The three run in interleaved rounds (3, or 1 with ``--quick``), the order rotated each round;
reported per peer: the median delivered msg/s, and the median of the per-round ratios with
their range.

Memory: peak RSS of the relay's processes (summed: main and shard children) holding 500 idle
inbound connections, next to the total RSS of Postfix's processes holding 500 idle connections on
its port-25 listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import LoadResult, Target, hold_idle, run_load
from benchmarks.measure import VENV_BIN, median, percentile, pss_kib, ratio, rss_kib
from benchmarks.postfix_peer import PostfixRelayPeer, running_peer
from lab.proc import tail

SUPPORT = "support@good.test"
CUSTOMER = "customer@nospf.test"
REPLY_TO = "bob@good.test"


@dataclass(frozen=True)
class Scenario:
    name: str
    senders: int
    per_session: int
    messages: int


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario("1x1", 1, 1, 3), Scenario("2x3", 2, 3, 6)]
    return [
        Scenario("1 sender, 1 msg/session", 1, 1, 60),
        # 10 sessions: with 2 (0.3 s) one 50 ms stall of either server moved a round by 15 %.
        Scenario("1 sender, 50 msg/session", 1, 50, 500),
        Scenario("20 senders, 1 msg/session", 20, 1, 200),
        Scenario("20 senders, 50 msg/session", 20, 50, 1000),
    ]


def count_messages(root: Path) -> int:
    """Files in every Maildir ``new/`` and ``cur/`` under ``root``."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur"):
            n += len(files)
    return n


def wait_count(root: Path, expected: int, timeout: float) -> float | None:
    """Seconds (monotonic clock) at which ``root`` holds ``expected`` messages; None at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_messages(root) >= expected:
            return time.monotonic()
        time.sleep(0.01)
    return None


def client_context(ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# -- the relay under test --------------------------------------------------------------------


@dataclass
class RelayProcess:
    proc: subprocess.Popen[bytes]
    inbound_port: int
    submission_port: int
    sink_dir: Path
    log_path: Path

    def pids(self) -> list[int]:
        """The main process and the shard children it started ([relay] processes > 1)."""
        children = re.findall(
            r"event=relay\.shard-started shard=\d+ pid=(\d+)", "\n".join(self.log())
        )
        return [self.proc.pid, *(int(pid) for pid in children)]

    @property
    def spool_dir(self) -> Path:  # both profiles put the spool next to the profile and the log
        return self.log_path.parent / "spool"

    def log(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_relay_profile(
    directory: Path, lab_state: Any, inbound_password: str, max_connections: int
) -> Path:
    from smtpconn.profile.secrets import hash_password

    relay_cert = lab_state.certs["relay"]
    text = f"""version = 1

[connector]
name = "benchmark"

[[addresses]]
address = "{SUPPORT}"
mode = "bidirectional"
workflow = "authenticated"

[addresses.outbound]
host = "{lab_state.server_name}"
port = {lab_state.ports["submission"]}
security = "starttls"
auth = "auto"
username = "{lab_state.user}"
secret = "env:BENCH_SMTP_PASSWORD"

[addresses.inbound]
username = "{SUPPORT}"
password_hash = "{hash_password(inbound_password)}"

[relay]
inbound_listen = "127.0.0.1:0"
submission_listen = "127.0.0.1:0"
tls_cert = "{relay_cert["cert"]}"
tls_key = "{relay_cert["key"]}"
spool = "{directory / "spool"}"
hostname = "relay.helpdesk.test"
max_connections_per_ip = {max_connections}
# two inbound processes (docs/relay.md, "processes"): the relay as one would run it on 2 cores
processes = 2

[relay.sink]
kind = "maildir"
path = "{directory / "sink"}"
"""
    path = directory / "smtpconn.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


_READY = re.compile(r"event=relay\.ready .*inbound=\S*:(\d+) submission=\S*:(\d+)")


def start_relay(
    profile: Path, lab_state: Any, timeout: float = 30.0, extra_env: dict[str, str] | None = None
) -> RelayProcess:
    env = {
        **os.environ,
        **(extra_env or {}),
        "BENCH_SMTP_PASSWORD": lab_state.password,
        "SMTPCONN_RESOLVER": lab_state.resolver,
        "SMTPCONN_CA_FILE": lab_state.ca_file,
    }
    # The log goes to a file, as journald takes it: a pipe drained by a thread of this
    # process (which also runs the load generator) filled up and made the relay wait in
    # write(2) for the harness (py-spy: 14 % of the relay's event loop in StreamHandler.emit).
    log_path = profile.parent / "relay.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "smtpconn", "relay", "--profile", str(profile)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=profile.parent,
        )
    found: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not found and proc.poll() is None:
        m = _READY.search(log_path.read_text(errors="replace"))
        if m:
            found.append((int(m.group(1)), int(m.group(2))))
        else:
            time.sleep(0.05)
    if not found:
        proc.kill()
        proc.wait(5)
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError("smtpconn relay did not become ready:\n" + "\n".join(tail))
    return RelayProcess(proc, found[0][0], found[0][1], profile.parent / "sink", log_path)


@contextlib.contextmanager
def running_relay(
    lab_state: Any, inbound_password: str, max_connections: int = 600
) -> Iterator[RelayProcess]:
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-bench-relay-"))
    relay = start_relay(
        write_relay_profile(directory, lab_state, inbound_password, max_connections), lab_state
    )
    try:
        yield relay
    finally:
        relay.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- measuring -------------------------------------------------------------------------------


def _summary(result: LoadResult, delivered_at: float | None, expected: int) -> dict[str, Any]:
    delivered_s = (delivered_at - result.started_at) if delivered_at else None
    return {
        "messages": expected,
        "sent": result.sent,
        "errors": len(result.errors),
        "first_errors": result.errors[:3],
        "accepted_per_s": round(result.sent / result.wall, 1) if result.wall else 0.0,
        "delivered_per_s": round(expected / delivered_s, 1) if delivered_s else None,
        "p50_ms": round(percentile(result.latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(result.latencies, 99) * 1000, 2),
    }


def measure(target: Target, maildir: Path, sc: Scenario, deliver_timeout: float) -> dict[str, Any]:
    before = count_messages(maildir)
    result = asyncio.run(
        run_load(target, messages=sc.messages, senders=sc.senders, per_session=sc.per_session)
    )
    delivered_at = (
        wait_count(maildir, before + result.sent, deliver_timeout) if result.sent else None
    )
    return _summary(result, delivered_at, sc.messages)


# -- inbound: interleaved rounds --------------------------------------------------------------

ROUNDS = 5
SIDES = ("smtpconn", "postfix")
# After both servers hold no mail of the last run: the relay fsyncs its spool folders and frees
# slot names about once a second, and that should not fall into the next run.
SETTLE_S = 1.0
IDLE_TIMEOUT_S = 60.0
_QUEUE_ID = re.compile(r"^([0-9A-Za-z]+)[*!]?\s+\d+\s", re.MULTILINE)


def spool_backlog(spool: Path) -> int:
    """Messages still in the relay's spool (every queue folder, shards and ``tmp/`` included)."""
    return sum(1 for _dirpath, _dirs, files in os.walk(spool) for f in files if f.endswith(".msg"))


def postfix_queue_ids(lab: Any) -> set[str]:
    """Queue ids in the lab Postfix's queue (``postqueue -p``: incoming, active, deferred, hold)."""
    return set(_QUEUE_ID.findall(lab.postfix.queue()))


def wait_idle(lab: Any, relay: RelayProcess, foreign: set[str]) -> float | None:
    """Wait until neither server holds benchmark mail, then :data:`SETTLE_S`; seconds waited
    (None: still busy after :data:`IDLE_TIMEOUT_S`, and the run starts anyway). ``foreign`` are
    queue ids that were in Postfix's queue before the benchmark (a test session's deferred mail)."""
    start = time.monotonic()
    flushed = False
    while True:
        queued = postfix_queue_ids(lab) - foreign
        if not queued and not spool_backlog(relay.spool_dir):
            break
        waited = time.monotonic() - start
        if waited > IDLE_TIMEOUT_S:
            return None
        if queued and not flushed and waited > 5.0:
            lab.postfix.flush()  # deferred benchmark mail: retry now, not at the next queue run
            flushed = True
        time.sleep(0.05)
    waited = time.monotonic() - start
    time.sleep(SETTLE_S)
    return round(waited, 2)


def maildir_files(root: Path) -> set[str]:
    """Paths of the messages in every Maildir ``new/`` and ``cur/`` under ``root``."""
    return {
        os.path.join(dirpath, f)
        for dirpath, _dirs, files in os.walk(root)
        if os.path.basename(dirpath) in ("new", "cur")
        for f in files
    }


def remove_delivered(root: Path, before: set[str]) -> None:
    """Remove the messages a run delivered (what is under ``root`` now and was not ``before``)."""
    for path in maildir_files(root) - before:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _median(values: list[float | None], digits: int) -> float | None:
    """The median, or None when a round has no value (it failed: reported as "n/a")."""
    if not values or any(v is None for v in values):
        return None
    return round(statistics.median(v for v in values if v is not None), digits)


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's rounds of a scenario: the keys of a single run, rates and latencies as the
    medians of the rounds; ``sent`` the fewest any round sent, ``errors`` all rounds' errors."""
    return {
        "messages": runs[0]["messages"],
        "sent": min(r["sent"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "first_errors": [e for r in runs for e in r["first_errors"]][:3],
        "accepted_per_s": _median([r["accepted_per_s"] for r in runs], 1),
        "delivered_per_s": _median([r["delivered_per_s"] for r in runs], 1),
        "p50_ms": _median([r["p50_ms"] for r in runs], 2),
        "p99_ms": _median([r["p99_ms"] for r in runs], 2),
        "accepted_per_s_rounds": [r["accepted_per_s"] for r in runs],
        "delivered_per_s_rounds": [r["delivered_per_s"] for r in runs],
    }


def _rounds_row(
    sc: Scenario, runs: dict[str, list[dict[str, Any]]], first: list[str], waits: list[float | None]
) -> dict[str, Any]:
    """A scenario's row: each ratio is the median of the rounds' ratios (smtpconn / Postfix of
    the same round), never a ratio of medians from different rounds."""
    pairs = list(zip(runs["smtpconn"], runs["postfix"], strict=True))

    def per_round(key: str) -> list[float | None]:
        return [ratio(r[key] or 0.0, p[key] or 0.0) for r, p in pairs]

    delivered = per_round("delivered_per_s")
    measured = [d for d in delivered if d is not None]
    return {
        "scenario": sc.name,
        "senders": sc.senders,
        "per_session": sc.per_session,
        "rounds": len(pairs),
        "first": first,
        "smtpconn": _combine(runs["smtpconn"]),
        "postfix": _combine(runs["postfix"]),
        "accepted_ratio": _median(per_round("accepted_per_s"), 3),
        "delivered_ratio": _median(delivered, 3),
        "delivered_ratios": delivered,
        "delivered_ratio_range": [min(measured), max(measured)] if measured else None,
        "p50_ratio": _median(per_round("p50_ms"), 3),
        "p99_ratio": _median(per_round("p99_ms"), 3),
        # Seconds the slowest run waited for the servers to drain the run before (None: a run
        # started with mail still queued).
        "max_idle_wait_s": None if None in waits else max(w for w in waits if w is not None),
    }


def scenario_rounds(
    lab: Any,
    relay: RelayProcess,
    sides: dict[str, tuple[Target, Path]],
    sc: Scenario,
    rounds: int,
    foreign: set[str],
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    first: list[str] = []
    waits: list[float | None] = []
    for i in range(rounds):
        order = SIDES if i % 2 == 0 else SIDES[::-1]
        first.append(order[0])
        for side in order:
            target, maildir = sides[side]
            waits.append(wait_idle(lab, relay, foreign))
            before = maildir_files(maildir)
            runs[side].append(measure(target, maildir, sc, 120.0))
            remove_delivered(maildir, before)
    return _rounds_row(sc, runs, first, waits)


def inbound(
    lab: Any, relay: RelayProcess, password: str, quick: bool, rounds: int | None = None
) -> list[dict[str, Any]]:
    st = lab.state
    ctx = client_context(Path(st.ca_file))
    relay_target = Target(
        "127.0.0.1",
        relay.inbound_port,
        ctx,
        SUPPORT,
        password,
        CUSTOMER,
        SUPPORT,
    )
    postfix_target = Target(
        "127.0.0.1",
        st.ports["submission"],
        ctx,
        st.user,
        st.password,
        CUSTOMER,
        SUPPORT,
    )
    sides = {
        "smtpconn": (relay_target, relay.sink_dir),
        "postfix": (postfix_target, Path(st.maildir)),
    }
    foreign = postfix_queue_ids(lab)
    k = rounds or (1 if quick else ROUNDS)
    return [scenario_rounds(lab, relay, sides, sc, k, foreign) for sc in scenarios(quick)]


async def submit_plain(port: int, messages: int) -> LoadResult:
    """The help desk: one plain session on loopback (no TLS, no AUTH), ``messages`` replies one
    after another, each waiting for the previous one's ``250``."""
    import aiosmtplib

    from benchmarks.loadgen import build_message

    res = LoadResult(started_at=time.monotonic())
    start = time.perf_counter()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    await client.connect()
    for i in range(messages):
        t = time.perf_counter()
        try:
            await client.sendmail(SUPPORT, [REPLY_TO], build_message(SUPPORT, REPLY_TO, f"o{i}"))
        except aiosmtplib.SMTPException as exc:
            res.errors.append(str(exc)[:300])
            continue
        res.latencies.append(time.perf_counter() - t)
        res.sent += 1
    await client.quit()
    res.wall = time.perf_counter() - start
    return res


def submit_and_wait(port: int, maildir: Path, messages: int) -> dict[str, Any]:
    """Submit on ``port`` and time until every reply is a file in the lab Postfix's Maildir."""
    before = count_messages(maildir)
    r = asyncio.run(submit_plain(port, messages))
    at = wait_count(maildir, before + r.sent, 120.0) if r.sent else None
    return _summary(r, at, messages)


def postfix_relay_round(peer: PostfixRelayPeer, maildir: Path, messages: int) -> dict[str, Any]:
    """Like smtpconn's round, through the Postfix peer; then check that Postfix really relayed
    every reply to the lab Postfix (its log: ``relay=127.0.0.1[127.0.0.1]:<port> ...
    status=sent``) rather than delivering or bouncing it itself."""
    relayed_before = peer.relayed()
    row = submit_and_wait(peer.port, maildir, messages)
    relayed = peer.wait_relayed(relayed_before + row["sent"]) - relayed_before
    if row["delivered_per_s"] is None or relayed != row["sent"]:
        raise RuntimeError(
            f"the Postfix relay peer relayed {relayed} of {row['sent']} replies to "
            f"{peer.nexthop}; log:\n{tail(peer.log, 20)}"
        )
    row["relayed"] = relayed
    return row


#: The outbound peers, in the first round's order (later rounds rotate it).
OUTBOUND_PEERS = ("smtpconn", "postfix_relay", "postfix_direct")


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One peer over the rounds: medians of the rates and latencies, totals of the counts."""

    def med(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return round(median(values), 2) if values else None

    return {
        "messages": rows[0]["messages"],
        "rounds": len(rows),
        "sent": sum(r["sent"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "first_errors": [e for r in rows for e in r["first_errors"]][:3],
        "accepted_per_s": med("accepted_per_s"),
        # a round that never delivered counts as 0 msg/s, not as a missing sample
        "delivered_per_s": round(median([r["delivered_per_s"] or 0.0 for r in rows]), 1),
        "delivered_per_s_each": [r["delivered_per_s"] for r in rows],
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
    }


def _ratio_stats(values: list[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    return {
        "median": round(median(known), 3) if known else None,
        "min": min(known, default=None),
        "max": max(known, default=None),
        "each": values,
    }


def outbound(lab: Any, relay: RelayProcess, quick: bool) -> dict[str, Any]:
    """Replies, three ways, in interleaved rounds (each round rotates the order):

    * ``smtpconn``: relay submission -> spool -> lab Postfix (TLS + AUTH) -> Maildir;
    * ``postfix_relay``: the same client on a second Postfix's plain listener -> its queue ->
      lab Postfix (TLS + AUTH) -> Maildir (benchmarks/postfix_peer.py): Postfix doing the relay's
      job, the peer of the "relay >= Postfix" target;
    * ``postfix_direct``: the generator straight to the lab Postfix (STARTTLS + AUTH): no relay
      at all, so smtpconn / direct is the cost of the hop.
    """
    from lab.lab import lab_tmp_base

    st = lab.state
    messages = 5 if quick else 200
    rounds = 1 if quick else 3
    maildir = Path(st.maildir)
    direct = Target(
        "127.0.0.1",
        st.ports["submission"],
        client_context(Path(st.ca_file)),
        st.user,
        st.password,
        SUPPORT,
        REPLY_TO,
    )
    with running_peer(lab_tmp_base(), st.ports["submission"], st.user, st.password) as peer:
        runs = {
            "smtpconn": lambda: submit_and_wait(relay.submission_port, maildir, messages),
            "postfix_relay": lambda: postfix_relay_round(peer, maildir, messages),
            "postfix_direct": lambda: measure(
                direct, maildir, Scenario("direct", 1, messages, messages), 120.0
            ),
        }
        per_round: list[dict[str, Any]] = []
        for k in range(rounds):
            order = [*OUTBOUND_PEERS[k % 3 :], *OUTBOUND_PEERS[: k % 3]]
            row: dict[str, Any] = {"order": order}
            for name in order:
                row[name] = runs[name]()
            s, pr, d = (row[name]["delivered_per_s"] or 0.0 for name in OUTBOUND_PEERS)
            row["relay_ratio"] = ratio(s, pr)
            row["delivered_ratio"] = ratio(s, d)
            per_round.append(row)
        settings = peer.settings
    relay_ratio = _ratio_stats([r["relay_ratio"] for r in per_round])
    direct_ratio = _ratio_stats([r["delivered_ratio"] for r in per_round])
    return {
        "messages": messages,
        "rounds": rounds,
        "smtpconn": _median_row([r["smtpconn"] for r in per_round]),
        "postfix_relay": _median_row([r["postfix_relay"] for r in per_round]),
        "postfix_direct": _median_row([r["postfix_direct"] for r in per_round]),
        # smtpconn / Postfix relaying the same replies (the target's peer): median of the
        # per-round ratios, with their range
        "relay_ratio": relay_ratio["median"],
        "relay_ratio_range": [relay_ratio["min"], relay_ratio["max"]],
        # smtpconn / direct submission to the customer's server: the cost of the hop
        "delivered_ratio": direct_ratio["median"],
        "delivered_ratio_range": [direct_ratio["min"], direct_ratio["max"]],
        "per_round": per_round,
        # every main.cf setting of the Postfix relay (the rest are Postfix's defaults)
        "postfix_relay_settings": settings,
    }


def _session_pss_kib(sid: int) -> int:
    """Proportional set size of every process in a session: shared pages split between them,
    so the sum is what the whole server really occupies (summing RSS would count libc and
    Postfix's shared libraries once per smtpd)."""
    from lab.proc import session_members

    return sum(pss_kib(pid) for pid in session_members(sid))


def memory(lab: Any, relay: RelayProcess, idle: int) -> dict[str, Any]:
    st = lab.state

    async def hold(port: int, sample: Any) -> tuple[int, int, Any]:
        writers, greeted = await hold_idle("127.0.0.1", port, idle)
        await asyncio.sleep(0.5)  # let the server settle on the connections it holds
        value = sample()
        for w in writers:
            w.close()
        return len(writers), greeted, value

    def relay_rss() -> dict[str, int]:  # every relay process together (main + shard children)
        found = [rss_kib(pid) for pid in relay.pids()]
        return {key: sum(f[key] for f in found) for key in ("rss_kib", "hwm_kib")}

    base = relay_rss()
    opened, greeted, mem = asyncio.run(hold(relay.inbound_port, relay_rss))
    pf_sid = st.pids["postfix"]
    pf_base = _session_pss_kib(pf_sid) + _session_pss_kib(st.pids["dovecot"])
    pf_opened, pf_greeted, pf_mem = asyncio.run(
        hold(st.ports["mx"], lambda: _session_pss_kib(pf_sid))
    )
    return {
        "idle_connections": idle,
        "smtpconn": {
            "opened": opened,
            "greeted": greeted,
            "rss_before_kib": base["rss_kib"],
            "rss_kib": mem["rss_kib"],
            "peak_rss_kib": mem["hwm_kib"],
        },
        "postfix": {
            "opened": pf_opened,
            "greeted": pf_greeted,
            "pss_before_kib": pf_base,
            "pss_kib": pf_mem,
            "note": "sum of PSS of every Postfix process (master, smtpd, ...); Postfix serves "
            "at most default_process_limit (100) connections at once, the rest wait unaccepted",
        },
        "memory_ratio": ratio(mem["rss_kib"], pf_mem),
    }


SCALE_ADDRESSES = 3000
SCALE_IDLE = 1000


def write_scale_profile(directory: Path, lab_state: Any, addresses: int, idle: int) -> Path:
    """The profile benchmark's generated profile (``addresses`` addresses, half of them with an
    inbound login) with a ``[relay]`` table that lets ``idle`` connections in from one IP."""
    from benchmarks.profile_bench import profile_text
    from smtpconn.profile.secrets import hash_password

    relay_cert = lab_state.certs["relay"]
    text = profile_text(addresses, hash_password("scale-benchmark"))
    relay = f"""[relay]
inbound_listen = "127.0.0.1:0"
submission_listen = "127.0.0.1:0"
tls_cert = "{relay_cert["cert"]}"
tls_key = "{relay_cert["key"]}"
spool = "{directory / "spool"}"
hostname = "relay.helpdesk.test"
max_connections_per_ip = {idle + 100}
max_sessions = {idle + 100}

[relay.sink]
kind = "maildir"
path = "{directory / "sink"}"
"""
    start, end = text.index("[relay]\n"), text.index("[relay.sink]\n")
    end = text.index("\n\n", end) if "\n\n" in text[end:] else len(text)
    path = directory / "smtpconn.toml"
    path.write_text(text[:start] + relay + text[end:])
    path.chmod(0o600)
    return path


def memory_at_scale(lab: Any, quick: bool) -> dict[str, Any]:
    """Item 5 of issue 16: the relay's RSS with 3,000 addresses in the profile and 1,000 idle
    inbound connections (greeted, then silent). Not a timed test: a figure for the README."""
    addresses, idle = (100, 50) if quick else (SCALE_ADDRESSES, SCALE_IDLE)
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-bench-scale-"))
    try:
        relay = start_relay(
            write_scale_profile(directory, lab.state, addresses, idle),
            lab.state,
            timeout=60.0,
            extra_env={"BENCH_SECRET": "unused"},
        )
        try:
            ready = rss_kib(relay.proc.pid)

            async def hold() -> tuple[int, int, dict[str, int]]:
                writers, greeted = await hold_idle("127.0.0.1", relay.inbound_port, idle)
                await asyncio.sleep(0.5)
                value = rss_kib(relay.proc.pid)
                for w in writers:
                    w.close()
                return len(writers), greeted, value

            opened, greeted, held = asyncio.run(hold())
        finally:
            relay.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "addresses": addresses,
        "idle_connections": idle,
        "opened": opened,
        "greeted": greeted,
        "rss_ready_kib": ready["rss_kib"],
        "rss_kib": held["rss_kib"],
        "peak_rss_kib": held["hwm_kib"],
        "target_kib": 150 * 1024,
    }


def run(lab: Any, quick: bool, rounds: int | None = None) -> dict[str, Any]:
    import secrets

    password = secrets.token_urlsafe(18)
    with running_relay(lab.state, password) as relay:
        out: dict[str, Any] = {"inbound": inbound(lab, relay, password, quick, rounds)}
        out["outbound"] = outbound(lab, relay, quick)
        out["memory"] = memory(lab, relay, 20 if quick else 500)
        out["relay_log_tail"] = [line for line in relay.log() if "error" in line.lower()][-5:]
    out["memory_at_scale"] = memory_at_scale(lab, quick)
    return out
