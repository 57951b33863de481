"""Process, port and polling helpers shared by the lab's servers.

Every daemon the lab starts runs in the foreground in a NEW session (``start_new_session``), so
it and every child it forks share one session id = the leader's pid. Stopping means: SIGTERM to
that process group, wait (with a deadline) until no process with that session id is left, then
SIGKILL what remains. That stops exactly what the lab started, never anything found by name, and
also catches children a daemon forked (Postfix's smtpd/qmgr, NSD's workers, Dovecot's auth).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


class LabError(RuntimeError):
    """A lab server could not be set up or started (the message says which and why)."""


class MissingBinaryError(LabError):
    """A program the lab needs is not installed (tests skip on this outside CI)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(
            "missing program(s): "
            + ", ".join(self.names)
            + " (run scripts/install-system-deps as root)"
        )


def which(name: str, extra_dirs: Sequence[str] = ("/usr/sbin", "/usr/lib/postfix/sbin")) -> str:
    """Find a program, also in sbin dirs (they are often not on a normal user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    found = shutil.which(name, path=path)
    if found is None:
        raise MissingBinaryError([name])
    return found


def missing_binaries(names: Sequence[str]) -> list[str]:
    missing = []
    for n in names:
        try:
            which(n)
        except MissingBinaryError:
            missing.append(n)
    return missing


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports that are free for both TCP and UDP on ``host``.

    All probe sockets are held open together so the kernel never hands out the same port twice;
    they are closed just before the servers bind. (A port could in theory be taken in between;
    the servers' start-up checks then fail loudly rather than flake silently.)
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((host, 0))
            held.append(tcp)
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((host, port))
            except OSError:
                udp.close()
                continue
            held.append(udp)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; raise LabError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_for_banner(host: str, port: int, timeout: float, tls: bool = False) -> None:
    """Wait until an SMTP listener answers with its 220 greeting (not just accepts TCP)."""

    def ready() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                if tls:
                    # Implicit-TLS port: a completed TCP connect is all we can see without
                    # a handshake; the smtpd behind it is spawned on demand by master.
                    return True
                s.settimeout(2.0)
                return s.recv(4).startswith(b"220")
        except OSError:
            return False

    wait_until(ready, timeout, f"SMTP greeting on {host}:{port}")


# ---------------------------------------------------------------------------------------------
# Sessions (process groups) started by the lab
# ---------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces/parens: split after the LAST ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[3])


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is not None and st[1] == sid and st[0] != "Z":
            members.append(int(entry.name))
    return members


def _socket_inodes(port: int, proto: str) -> set[str]:
    """Inodes of IPv4 sockets bound to 127.0.0.1:``port`` (TCP: listening ones only)."""
    want = f"0100007F:{port:04X}"
    inodes: set[str] = set()
    try:
        lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return inodes
    for line in lines:
        f = line.split()
        if len(f) > 9 and f[1] == want and (proto != "tcp" or f[3] == "0A"):
            inodes.add(f[9])
    return inodes


def session_owns_port(sid: int, port: int, proto: str = "tcp") -> bool:
    """True if a process of session ``sid`` holds the socket bound to 127.0.0.1:``port``.

    Start-up checks use this rather than "something answers there": with free ports picked
    before the daemons bind, another program could have taken the port in between, and its
    answers must not be mistaken for our server's.
    """
    inodes = _socket_inodes(port, proto)
    if not inodes:
        return False
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in session_members(sid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return True
    return False


def port_taken(port: int, host: str = LOOPBACK) -> bool:
    """True if something else holds ``host:port`` (TCP listener or UDP socket) right now.

    SO_REUSEADDR on the TCP probe: a connection of ours lingering in TIME_WAIT is not "taken".
    """
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return True
    return False


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _signal_session(sid: int, sig: int) -> None:
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_session(
    sid: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Stop every process of the session ``sid`` (a daemon the lab started, and its children).

    SIGTERM to the leader first: Postfix's master, Dovecot and NSD then stop their own children
    in order (signalling all at once leaves orphans and noisy logs). Whatever is still there
    after half the timeout gets SIGTERM directly, and SIGKILL at the deadline. ``proc`` (the
    leader's Popen, if this process started it) is reaped so no zombie is left behind.
    """
    deadline = time.monotonic() + timeout

    def wait(until: float) -> bool:
        while session_members(sid) and time.monotonic() < until:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
            else:
                time.sleep(0.05)
        return not session_members(sid)

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(sid, signal.SIGTERM)
    if not wait(time.monotonic() + timeout / 2):
        _signal_session(sid, signal.SIGTERM)
        if not wait(deadline):
            _signal_session(sid, signal.SIGKILL)
            wait_until(lambda: not session_members(sid), 5.0, f"session {sid} to die after SIGKILL")
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


def spawn(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a foreground daemon in its own session, stdout/stderr appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )


class OwnedSession:
    """A process this object started in a session of its own (``proc``, ``pid``): :meth:`stop`
    stops that session by its pid and nothing else."""

    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None

    def stop(self) -> None:
        if self.pid is not None:
            stop_session(self.pid, proc=self.proc)
            self.pid = None
            self.proc = None


class ListeningDaemon(OwnedSession):
    """A foreground daemon of the lab with one TCP listener: started in its own session, ready
    when that session owns the port, stopped by its pid (subclasses set ``host``, ``port``,
    ``log`` and call :meth:`launch`)."""

    host: str
    port: int
    log: Path

    def launch(self, argv: Sequence[str], what: str, timeout: float) -> None:
        self.proc = spawn(argv, self.log)
        self.pid = self.proc.pid
        name = Path(argv[0]).name

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"{name} exited with {self.proc.returncode}:\n{tail(self.log)}")
            return session_owns_port(self.pid or 0, self.port) and port_open(self.host, self.port)

        try:
            wait_until(ready, timeout, f"{what} on {self.host}:{self.port}")
        except LabError:
            self.stop()
            raise


def run(
    argv: Sequence[str], what: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> str:
    """Run a helper command to completion; raise LabError with its output if it fails."""
    try:
        res = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{what}: timed out after {timeout}s: {' '.join(argv)}") from e
    if res.returncode != 0:
        raise LabError(
            f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n{res.stdout}{res.stderr}"
        )
    return res.stdout


def tail(path: Path, lines: int = 30) -> str:
    """The end of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
