"""The lab's authoritative DNS: NSD serving ``lab.zones`` on 127.0.0.1 (UDP + TCP).

NSD runs in the foreground (``-d``) with its own config, zone files, pid file, database and log
in the lab directory; nothing under /etc/nsd is read or changed. The system's NSD service is
never involved.

Also: ``BlackHoleResolver`` (a UDP+TCP port that never answers, for timeout tests) and
``ServfailResolver`` (answers every query with SERVFAIL).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from lab import zones
from lab.proc import (
    LOOPBACK,
    LabError,
    OwnedSession,
    free_ports,
    run,
    session_owns_port,
    spawn,
    tail,
    wait_until,
    which,
)


def _query_soa(host: str, port: int, name: str, timeout: float = 0.2) -> bool:
    """True if the server answers an SOA query for ``name`` authoritatively (raw UDP, no deps)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x4C41, 0x0000, 1, 0, 0, 0) + qname + struct.pack(">HH", 6, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (host, port))
            data = s.recv(4096)
        except OSError:
            return False
    if len(data) < 12:
        return False
    ident, flags, _qd, ancount = struct.unpack(">HHHH", data[:8])
    return bool(ident == 0x4C41 and flags & 0x000F == 0 and ancount >= 1)


def dig(host: str, port: int, *args: str, short: bool = True, timeout: float = 10.0) -> str:
    """Run ``dig @host -p port ARGS`` (``+short`` unless ``short=False``) and return stdout.

    Retries are off and the timeout short: against a loopback server, a lost answer is a bug.
    """
    argv = [which("dig"), f"@{host}", "-p", str(port), "+tries=1", "+time=3", *args]
    if short:
        argv.append("+short")
    return run(argv, "dig", timeout=timeout)


class NsdServer(OwnedSession):
    """NSD on 127.0.0.1:``port`` serving every zone of ``lab.zones``.

    ``public_keys`` maps DKIM key names to DER public keys (from ``lab.keys``).
    """

    def __init__(self, directory: Path, public_keys: Mapping[str, bytes], port: int | None = None):
        self.directory = directory
        self.host = LOOPBACK
        self.port = port if port is not None else free_ports(1)[0]
        self.public_keys = dict(public_keys)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.log = directory / "nsd.log"
        self.conf = directory / "nsd.conf"

    @property
    def address(self) -> str:
        """``host:port`` as used by ``--resolver`` / ``SMTPCONN_RESOLVER``."""
        return f"{self.host}:{self.port}"

    def all_ports(self) -> list[int]:
        return [self.port]

    def write_config(self) -> None:
        d = self.directory
        (d / "zones").mkdir(parents=True, exist_ok=True)
        (d / "xfr").mkdir(exist_ok=True)
        zone_conf = []
        for name, text in zones.render_zones(self.public_keys).items():
            (d / "zones" / f"{name}.zone").write_text(text)
            zone_conf.append(f'zone:\n  name: "{name}"\n  zonefile: "{name}.zone"\n')
        # username "" keeps NSD from switching user/chroot: the lab dir is ours, and a chroot
        # would need the zone files copied inside it. No database: zones load from text files.
        self.conf.write_text(
            f"""server:
  ip-address: {self.host}
  port: {self.port}
  # Response-rate limiting (about 200 answers a second per client network by default) would
  # make a test or benchmark that checks hundreds of domains at once measure NSD, not smtpconn.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  do-ip4: yes
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{d / "zones"}"
  pidfile: "{d / "nsd.pid"}"
  database: ""
  zonelistfile: "{d / "zone.list"}"
  xfrdfile: "{d / "xfrd.state"}"
  xfrdir: "{d / "xfr"}"
  logfile: "{self.log}"
  server-count: 1
  tcp-count: 20
  verbosity: 1
  hide-version: yes
  refuse-any: no
remote-control:
  control-enable: no

"""
            + "\n".join(zone_conf)
        )

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_config()
        run([which("nsd-checkconf"), str(self.conf)], "nsd-checkconf")
        self.proc = spawn([which("nsd"), "-d", "-c", str(self.conf)], self.log)
        self.pid = self.proc.pid
        try:
            wait_until(
                lambda: (
                    self._alive_or_raise()
                    and session_owns_port(self.pid or 0, self.port, "udp")
                    and _query_soa(self.host, self.port, "good.test")
                ),
                timeout,
                f"NSD on {self.address}",
            )
        except LabError:
            self.stop()
            raise

    def _alive_or_raise(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(f"NSD exited with {self.proc.returncode}:\n{tail(self.log)}")
        return True


class _SilentServer:
    """Base: a UDP (and TCP) socket on a free loopback port, served by a daemon thread."""

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = free_ports(1)[0]
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((self.host, self.port))
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((self.host, self.port))
        self._tcp.listen(16)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _answer(self, query: bytes) -> bytes | None:
        return None

    def _serve(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ)
        sel.register(self._tcp, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if sock is self._udp:
                        data, peer = sock.recvfrom(4096)
                        reply = self._answer(data)
                        if reply is not None:
                            sock.sendto(reply, peer)
                    elif sock is self._tcp:
                        # Accept and hold TCP connections open without answering either.
                        conn, _ = sock.accept()
                        self._conns.append(conn)
                except OSError:
                    pass
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for s in [self._udp, self._tcp, *self._conns]:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> _SilentServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BlackHoleResolver(_SilentServer):
    """A "resolver" that receives queries and never answers: for DNS timeout tests."""


class ServfailResolver(_SilentServer):
    """A "resolver" that answers every query with SERVFAIL (rcode 2), echoing the question."""

    def _answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, flags, qd = struct.unpack(">HHH", query[:6])
        # Echo only the question (not any EDNS OPT record after it) so clients accept it.
        end = 12
        while end < len(query) and query[end] != 0:
            end += query[end] + 1
        question = query[12 : end + 5] if qd == 1 else b""
        rflags = 0x8000 | (flags & 0x7900) | 0x0080 | 2  # QR, opcode+RD copied, RA, SERVFAIL
        return struct.pack(">HHHHHH", ident, rflags, 1 if question else 0, 0, 0, 0) + question
