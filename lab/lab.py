"""``Lab``: start and stop every lab server under one directory, and describe it in a JSON file.

    with Lab() as lab:                       # or lab = Lab(); lab.start(); ...; lab.stop()
        lab.resolver                         # "127.0.0.1:PORT" (NSD serving lab.zones)
        lab.ca_file                          # the lab CA, the trust anchor for every lab cert
        lab.ports["submission"]              # see lab.postfix for every port name
        lab.user.username, lab.user.password # a SASL user of the lab's Postfix
        lab.set_relay_target("helpdesk.test", "127.0.0.1", port, "user", "password")
        lab.find_message("token")            # wait for a delivery into the lab's Maildirs
        lab.dkim_key_for("good.test")        # (selector, DkimKey) whose private half we hold

The JSON state file (``state.json`` in the lab directory, or the path given) holds the same
settings for other processes (``python -m lab status``, the demo, benchmarks): resolver, CA
file, server name and ports, users, Maildir root, DKIM key paths, certificate paths and the pids
of the servers, which is how ``python -m lab down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from lab import zones
from lab.ca import LabCA, write_lab_ca
from lab.dns import NsdServer
from lab.keys import DkimKey, generate_dkim_keys, load_public_der
from lab.mta_sts import PolicyServer
from lab.opendkim import SIGNING_KEY
from lab.postfix import DEFAULT_USER, USERS, Delivered, PostfixServer, RelayTarget, TestUser
from lab.proc import (
    LOOPBACK,
    LabError,
    cmdline,
    missing_binaries,
    port_open,
    port_taken,
    session_members,
    spawn,
    stop_session,
    wait_until,
)
from lab.swaks import SwaksResult, send

STATE_VERSION = 1

#: Programs the lab runs. Missing ones make tests skip (locally) or fail (CI).
REQUIRED_BINARIES: tuple[str, ...] = (
    "nsd",
    "nsd-checkconf",
    "postfix",
    "postmap",
    "postqueue",
    "dovecot",
    "opendkim",
    "swaks",
    "dig",
    "openssl",
)

#: Session leader program of each server: ``down`` only signals a recorded pid whose command
#: line still names it, so a pid reused by an unrelated process is never touched.
_EXPECTED_PROGRAM = {
    "nsd": "nsd",
    "postfix": "master",
    "dovecot": "dovecot",
    "dovecot-oauth": "dovecot",
    "opendkim": "opendkim",
    "mta-sts": "python",
}


@dataclass
class LabState:
    """Everything another process needs to use (or stop) a running lab. Saved as JSON."""

    root: str
    resolver: str
    dns_host: str
    dns_port: int
    ca_file: str
    untrusted_ca_file: str
    server_name: str
    server_host: str
    ports: dict[str, int]
    sasl_port: int
    user: str
    password: str
    users: dict[str, str]
    maildir: str
    postfix_config_dir: str
    relay_domain: str
    relay_host: str
    #: DKIM key name -> {"path": PEM file of the private key, "bits": "2048"}
    dkim_keys: dict[str, dict[str, str]]
    #: mail domain -> {"selector", "key" (name), "path" (private key the tests sign with)}
    dkim_domains: dict[str, dict[str, str]]
    #: cert name -> {"cert", "key"}: server, expired, expiring, wrong_host, untrusted, relay
    certs: dict[str, dict[str, str]]
    #: server name -> pid (= session id) of its leader process
    pids: dict[str, int]
    relay_targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The process that started the lab, and whether the servers are meant to outlive it
    #: (``scripts/lab up``). A non-detached lab whose owner died is an orphan: see reap_orphans.
    owner_pid: int = 0
    detached: bool = False
    #: HTTPS port of the MTA-STS policy server (lab/mta_sts.py); 0 when none runs.
    mta_sts_port: int = 0
    #: OpenDKIM's milter port (the signing port's signer, lab/opendkim.py); 0 when none runs.
    milter_port: int = 0
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        # Atomic: readers (status, another shell) never see a half-written file.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.chmod(0o600)  # holds the test passwords
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> LabState:
        data = json.loads(path.read_text())
        if data.get("version") != STATE_VERSION:
            raise LabError(f"{path}: unsupported lab state version {data.get('version')}")
        return cls(**data)

    def env(self) -> dict[str, str]:
        """Environment variables for people and scripts (written to ``.lab/env``)."""
        env = {
            "SMTPCONN_RESOLVER": self.resolver,
            "SMTPCONN_CA_FILE": self.ca_file,
            "SMTPCONN_LAB_ROOT": self.root,
            "SMTPCONN_LAB_SERVER_NAME": self.server_name,
            "SMTPCONN_LAB_HOST": self.server_host,
            "SMTPCONN_LAB_USER": self.user,
            "SMTPCONN_LAB_PASSWORD": self.password,
            "SMTPCONN_LAB_MAILDIR": self.maildir,
            "SMTPCONN_LAB_DKIM_KEY": self.dkim_keys["main"]["path"],
            "SMTPCONN_LAB_RELAY_CERT": self.certs["relay"]["cert"],
            "SMTPCONN_LAB_RELAY_KEY": self.certs["relay"]["key"],
        }
        for name, port in self.ports.items():
            env[f"SMTPCONN_LAB_PORT_{name.upper()}"] = str(port)
        if self.mta_sts_port:
            env["SMTPCONN_MTA_STS_PORT"] = str(self.mta_sts_port)
        return env


def lab_root_ok(root: Path) -> bool:
    """Postfix's and Dovecot's unprivileged processes must be able to reach the lab dir."""
    p = root.resolve()
    return all(os.stat(d).st_mode & 1 for d in [p, *p.parents])


def lab_tmp_base() -> Path:
    """Where lab directories go: the temp dir, unless it is private (e.g. a 0700 TMPDIR)."""
    base = Path(tempfile.gettempdir())
    return base if lab_root_ok(base) else Path("/tmp")


def make_lab_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="smtpconn-lab-", dir=lab_tmp_base()))
    root.chmod(0o755)
    return root


class Lab:
    """All lab servers under one directory (``root``; a fresh temp dir by default).

    ``stop_at_exit`` registers an atexit guard so a crashed test run still stops the servers;
    ``scripts/lab up`` turns it off because there the servers must outlive the command.
    """

    def __init__(
        self,
        root: Path | None = None,
        state_file: Path | None = None,
        *,
        stop_at_exit: bool = True,
        users: tuple[TestUser, ...] = USERS,
    ) -> None:
        self._own_root = root is None
        if root is None:
            # Under the system temp dir, not pytest's (0700) tmp_path: the postfix, dovecot and
            # nobody users must traverse to the queue, the auth files and the Maildirs.
            root = make_lab_root()
        self.root = root
        self.state_file = state_file or root / "state.json"
        self.stop_at_exit = stop_at_exit
        self.users = users
        self.dkim_keys: dict[str, DkimKey] = {}
        self.ca: LabCA | None = None
        self.dns: NsdServer | None = None
        self.postfix: PostfixServer | None = None
        self.mta_sts: PolicyServer | None = None  # in-process (tests)
        self._sts_process: subprocess.Popen[bytes] | None = None  # detached (lab up)
        self._sts_pid: int | None = None
        self._sts_port = 0
        self._state: LabState | None = None
        self._atexit_registered = False
        self._owner_pid = os.getpid()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> LabState:
        if os.geteuid() != 0:
            raise LabError(
                "the lab must be started as root (Postfix, Dovecot and NSD start as "
                "root and drop to their own users)"
            )
        missing = missing_binaries(REQUIRED_BINARIES)
        if missing:
            from lab.proc import MissingBinaryError

            raise MissingBinaryError(missing)
        self.root.mkdir(parents=True, exist_ok=True)
        if not lab_root_ok(self.root):
            raise LabError(
                f"{self.root} (or a parent) is not world-traversable (o+x); Postfix's "
                "unprivileged processes could not reach it. Use a dir under /tmp."
            )
        if self.stop_at_exit:
            reap_orphans()
        if self.stop_at_exit and not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self.dkim_keys = generate_dkim_keys(self.root / "keys")
            self.ca = write_lab_ca(self.root / "ca")
            public = {n: k.public_der for n, k in self.dkim_keys.items()}
            self.dns = _start_retrying(lambda: NsdServer(self.root / "dns", public))
            ca = self.ca
            signing_key = self.dkim_keys[SIGNING_KEY].path
            self.postfix = _start_retrying(
                lambda: PostfixServer(
                    self.root / "postfix", ca, self.users, signing_key=signing_key
                )
            )
            if self.stop_at_exit:
                self.mta_sts = PolicyServer(ca, self.root / "mta-sts").start()
            else:  # a thread cannot outlive "lab up": its own process instead
                self._start_detached_policy_server(ca)
        except BaseException:
            self.stop()
            raise
        self.save_state()
        return self.state

    def stop(self) -> None:
        """Stop every server this Lab started (or attached to). Safe to call more than once."""
        errors: list[BaseException] = []
        if self.mta_sts is not None:
            self.mta_sts.stop()
            self.mta_sts = None
        if self._sts_pid is not None:
            stop_session(self._sts_pid, proc=self._sts_process)
            self._sts_pid, self._sts_process, self._sts_port = None, None, 0
        for server in (self.postfix, self.dns):
            if server is None:
                continue
            try:
                server.stop()
            except BaseException as e:  # keep stopping the others, report at the end
                errors.append(e)
        ports = self._all_ports()
        with contextlib.suppress(LabError):
            wait_until(
                lambda: not any(port_open(LOOPBACK, p, 0.2) for p in ports),
                10.0,
                "lab ports to close",
            )
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if errors:
            raise errors[0]

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _all_ports(self) -> list[int]:
        ports: list[int] = []
        if self.dns is not None:
            ports.append(self.dns.port)
        if self.postfix is not None:
            ports += self.postfix.all_ports()
        return ports

    def pids(self) -> dict[str, int]:
        """Leader pid (= session id) of each running server."""
        out: dict[str, int] = {}
        if self.dns is not None and self.dns.pid is not None:
            out["nsd"] = self.dns.pid
        if self.postfix is not None:
            if self.postfix.pid is not None:
                out["postfix"] = self.postfix.pid
            if self.postfix.dovecot.pid is not None:
                out["dovecot"] = self.postfix.dovecot.pid
            if self.postfix.oauth_dovecot.pid is not None:
                out["dovecot-oauth"] = self.postfix.oauth_dovecot.pid
            if self.postfix.opendkim.pid is not None:
                out["opendkim"] = self.postfix.opendkim.pid
        if self._sts_pid is not None:
            out["mta-sts"] = self._sts_pid
        return out

    def _start_detached_policy_server(self, ca: LabCA) -> None:
        directory = self.root / "mta-sts"
        directory.mkdir(parents=True, exist_ok=True)
        port_file = directory / "port"
        repo = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": repo}
        argv = [sys.executable, "-m", "lab.mta_sts", str(ca.ca_cert.parent), str(directory)]
        self._sts_process = spawn([*argv, str(port_file)], directory / "server.log", env=env)
        self._sts_pid = self._sts_process.pid
        wait_until(port_file.exists, 10.0, "the MTA-STS policy server to listen")
        self._sts_port = int(port_file.read_text())

    # -- state -----------------------------------------------------------------------------

    def _require(self) -> tuple[NsdServer, PostfixServer, LabCA]:
        if self.dns is None or self.postfix is None or self.ca is None:
            raise LabError("the lab is not running (call start() first)")
        return self.dns, self.postfix, self.ca

    def save_state(self) -> None:
        dns, pf, ca = self._require()
        user = self.users[0] if self.users else DEFAULT_USER
        certs = {
            name: {"cert": str(cf.cert), "key": str(cf.key)}
            for name, cf in (
                ("server", ca.server),
                ("expired", ca.expired),
                ("expiring", ca.expiring),
                ("wrong_host", ca.wrong_host),
                ("untrusted", ca.untrusted),
                ("relay", ca.relay),
            )
        }
        dkim_domains = {}
        for d in zones.DOMAINS:
            if d.dkim is not None:
                dkim_domains[d.name] = {
                    "selector": d.dkim.selector,
                    "key": d.dkim.key,
                    "path": str(self.dkim_keys[d.dkim.key].path),
                }
        self._state = LabState(
            root=str(self.root),
            resolver=dns.address,
            dns_host=dns.host,
            dns_port=dns.port,
            ca_file=str(ca.ca_cert),
            untrusted_ca_file=str(ca.untrusted_ca_cert),
            server_name=zones.MAIL_HOST,
            server_host=pf.host,
            ports=dict(pf.ports),
            sasl_port=pf.sasl_port,
            user=user.username,
            password=user.password,
            users={u.username: u.password for u in self.users},
            maildir=str(pf.maildir_root),
            postfix_config_dir=str(pf.config_dir),
            relay_domain=zones.RELAY_DOMAIN,
            relay_host=zones.RELAY_HOST,
            dkim_keys={
                n: {"path": str(k.path), "bits": str(k.bits)} for n, k in self.dkim_keys.items()
            },
            dkim_domains=dkim_domains,
            certs=certs,
            pids=self.pids(),
            relay_targets={d: asdict(t) for d, t in pf.relay_targets.items()},
            owner_pid=self._owner_pid,
            detached=not self.stop_at_exit,
            mta_sts_port=self.mta_sts.port if self.mta_sts else self._sts_port,
            milter_port=pf.opendkim.port if pf.opendkim.pid is not None else 0,
        )
        self._state.save(self.state_file)

    @property
    def state(self) -> LabState:
        if self._state is None:
            raise LabError("the lab is not running (call start() first)")
        return self._state

    @classmethod
    def attach(cls, state_file: Path) -> Lab:
        """A Lab object for servers another process started (from its state file).

        ``stop()`` on it stops those servers (checking each pid still runs the expected
        program); ``set_relay_target`` rewrites their maps and reloads Postfix.
        """
        st = LabState.load(state_file)
        root = Path(st.root)
        lab = cls(
            root,
            state_file,
            stop_at_exit=False,
            users=tuple(TestUser(u, p) for u, p in st.users.items()),
        )
        lab._own_root = False
        lab._state = st
        lab._owner_pid = st.owner_pid
        lab.ca = LabCA.at(root / "ca")
        lab.dkim_keys = {
            n: DkimKey(n, int(v["bits"]), Path(v["path"]), load_public_der(Path(v["path"])))
            for n, v in st.dkim_keys.items()
            if Path(v["path"]).exists()
        }
        dns = NsdServer(root / "dns", {}, port=st.dns_port)
        pf = PostfixServer(
            root / "postfix",
            lab.ca,
            lab.users,
            ports=st.ports,
            sasl_port=st.sasl_port,
            milter_port=st.milter_port or None,
        )
        pf.relay_targets = {d: RelayTarget(**t) for d, t in st.relay_targets.items()}
        pf.relay_domains |= set(pf.relay_targets)
        for name, pid in st.pids.items():
            if not _owned(name, pid):
                continue
            if name == "nsd":
                dns.pid = pid
            elif name == "postfix":
                pf.pid = pid
            elif name == "dovecot":
                pf.dovecot.pid = pid
            elif name == "dovecot-oauth":
                pf.oauth_dovecot.pid = pid
            elif name == "opendkim":
                pf.opendkim.pid = pid
            elif name == "mta-sts":
                lab._sts_pid, lab._sts_port = pid, st.mta_sts_port
        lab.dns, lab.postfix = dns, pf
        return lab

    # -- conveniences for tests ------------------------------------------------------------

    @property
    def resolver(self) -> str:
        return self._require()[0].address

    @property
    def ca_file(self) -> Path:
        return self._require()[2].ca_cert

    @property
    def ports(self) -> dict[str, int]:
        return self._require()[1].ports

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def server_name(self) -> str:
        return zones.MAIL_HOST

    @property
    def user(self) -> TestUser:
        return self.users[0] if self.users else DEFAULT_USER

    @property
    def maildir(self) -> Path:
        return self._require()[1].maildir_root

    def dkim_key_for(self, domain: str) -> tuple[str, DkimKey]:
        """(selector, key) the tests sign with for a lab domain (see lab.zones)."""
        d = zones.DOMAINS_BY_NAME[domain]
        if d.dkim is None:
            raise LabError(f"{domain} has no DKIM selector")
        return d.dkim.selector, self.dkim_keys[d.dkim.key]

    def set_relay_target(
        self,
        domain: str,
        host: str,
        port: int,
        username: str,
        password: str,
        tls: str = "encrypt",
        match: str = zones.RELAY_HOST,
    ) -> RelayTarget:
        """See ``PostfixServer.set_relay_target``; also recorded in the state file."""
        target = self._require()[1].set_relay_target(
            domain, host, port, username, password, tls=tls, match=match
        )
        self.save_state()
        return target

    def clear_relay_target(self, domain: str) -> None:
        self._require()[1].clear_relay_target(domain)
        self.save_state()

    def find_message(
        self, token: str | bytes, address: str | None = None, timeout: float = 20.0
    ) -> Delivered:
        return self._require()[1].find_message(token, address, timeout)

    def messages(self, address: str | None = None) -> list[Delivered]:
        return self._require()[1].messages(address)

    def send(self, port_name: str, **kwargs: Any) -> SwaksResult:
        """swaks to one of the lab's Postfix ports (see ``lab.swaks.send`` for the options)."""
        return send(self.ports[port_name], **kwargs)


_Server = TypeVar("_Server", NsdServer, PostfixServer)


def _start_retrying(make: Callable[[], _Server], attempts: int = 3) -> _Server:
    """Create and start a server; on a port taken between choosing and binding it (another
    program was quicker), start again on fresh ports instead of failing the run."""
    for attempt in range(1, attempts + 1):
        server = make()
        try:
            server.start()
            return server
        except LabError:
            # start() has stopped what it started, so any of its ports still held now is held
            # by someone else (Postfix's own "address in use" message goes to a syslog that
            # may not exist, so the ports are checked rather than the logs).
            if attempt == attempts or not any(port_taken(p) for p in server.all_ports()):
                raise
            shutil.rmtree(server.directory, ignore_errors=True)
    raise AssertionError("unreachable")


def _owned(name: str, pid: int) -> bool:
    """True if ``pid`` still runs the program the lab started as ``name``."""
    argv = cmdline(pid)
    return bool(argv) and Path(argv[0]).name.startswith(_EXPECTED_PROGRAM.get(name, name))


def stop_state(state_file: Path) -> list[str]:
    """Stop the servers recorded in a state file (``python -m lab down``). Returns what it did."""
    st = LabState.load(state_file)
    done: list[str] = []
    for name, pid in st.pids.items():
        if _owned(name, pid):
            stop_session(pid)
            done.append(f"stopped {name} (pid {pid})")
        elif session_members(pid):
            # Leader gone but children of its session remain (ours: a session id cannot be
            # reused while any member lives).
            stop_session(pid)
            done.append(f"stopped leftovers of {name} (session {pid})")
        else:
            done.append(f"{name} (pid {pid}) was not running")
    return done


def reap_orphans(tmp: Path | None = None) -> list[str]:
    """Stop labs left behind by test runs that died without cleaning up (SIGKILL, os._exit).

    Only labs under the temp dir whose state says they are not detached (not ``lab up``) and
    whose owner process is gone are touched; their servers are stopped by the recorded pids.
    """
    done: list[str] = []
    base = tmp or lab_tmp_base()
    for state_file in base.glob("smtpconn-lab-*/state.json"):
        try:
            st = LabState.load(state_file)
        except (OSError, ValueError, TypeError, LabError):
            continue
        if st.detached or st.owner_pid <= 0 or Path(f"/proc/{st.owner_pid}").exists():
            continue
        done += stop_state(state_file)
        shutil.rmtree(state_file.parent, ignore_errors=True)
        done.append(f"removed orphaned lab {state_file.parent}")
    return done
