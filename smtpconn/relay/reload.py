"""Reloading a running relay: what a reload cannot change, the pid file a running relay keeps in
its spool, and ``smtpconn relay --reload``, which signals that relay.

The pid file lives in the spool because a spool has exactly one relay (its ``.lock``): the
spool named by the profile finds the relay working on it. The pid is only signalled while the
spool's lock is held, and only when that process is an smtpconn relay, so a stale or
tampered-with pid file never makes us signal an unrelated process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from smtpconn.durable import write_atomically
from smtpconn.errors import UsageError

if TYPE_CHECKING:
    from smtpconn.relay.config import RelayConfig

PID_FILE = "relay.pid"

# Set once when the listeners, the sink and the spool are made; a reload keeps the running ones.
_RESTART_ONLY = (
    "inbound_listen",
    "inbound_tls_listen",
    "submission_listen",
    "tls_cert",
    "tls_key",
    "spool_dir",
    "sink",
    "max_connections_per_ip",
    "max_sessions",
    "max_memory",
    "metrics_listen",
    "processes",
)


def needs_restart(running: RelayConfig, loaded: RelayConfig) -> list[str]:
    """The settings ``loaded`` changes that only a restart applies (in ``_RESTART_ONLY`` order)."""
    return [name for name in _RESTART_ONLY if getattr(running, name) != getattr(loaded, name)]


@contextlib.contextmanager
def pid_file(spool_dir: Path) -> Iterator[Path]:
    """This process's pid in ``spool_dir/relay.pid`` while the block runs (the caller holds the
    spool's lock), removed afterwards."""
    path = spool_dir / PID_FILE
    write_atomically(path, f"{os.getpid()}\n".encode(), mode=0o600)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


def signal_reload(spool_dir: Path) -> int:
    """Send SIGHUP to the relay working on ``spool_dir``; its pid. UsageError when none runs."""
    pid = running_pid(spool_dir)
    if pid is None:
        raise UsageError(
            f"no relay is running on the spool {spool_dir}",
            fix="start it with smtpconn relay (a stopped relay reads the profile when it starts)",
        )
    os.kill(pid, signal.SIGHUP)
    return pid


def running_pid(spool_dir: Path) -> int | None:
    """The pid of the relay that holds ``spool_dir``'s lock, or None."""
    if not spool_in_use(spool_dir):
        return None
    try:
        pid = int((spool_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 1 and _is_relay(pid) else None


def spool_in_use(spool_dir: Path) -> bool:
    """Whether a relay holds ``spool_dir``'s lock (runs on it) right now."""
    try:
        fd = os.open(spool_dir / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _is_relay(pid: int) -> bool:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"smtpconn" in w for w in words) and b"relay" in words
