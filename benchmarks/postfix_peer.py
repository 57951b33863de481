"""Postfix in smtpconn's place: a second Postfix instance doing the relay's outbound job.

It is set up the way an admin sets up Postfix as a smarthost client: it accepts the help desk's
replies on a plain loopback listener (no TLS, no AUTH; the help desk is trusted by address, as
smtpconn's submission listener trusts loopback), queues them durably and relays everything to
``[127.0.0.1]:<lab submission port>`` with STARTTLS required and SASL AUTH as the lab user. The
lab Postfix then delivers them to the same Maildir smtpconn's replies reach.

Every ``main.cf`` setting is in :func:`main_cf`: what it needs to run and to relay, plus three
that remove handicaps a tuned Postfix would not have (``in_flow_delay = 0s`` and
``smtpd_peername_lookup = no``, as the lab Postfix that is the inbound peer has them, and
``smtp_tls_connection_reuse = yes``, as smtpconn reuses its outbound session). Postfix's own
defaults everywhere else (``default_destination_concurrency_limit = 20``, fsync of every queue
file, ...). One listener, no Dovecot, no mailbox domains.
"""

from __future__ import annotations

import contextlib
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lab.postfix import MASTER_SERVICES, backdate, spawn_master, wait_bound
from lab.proc import (
    LOOPBACK,
    LabError,
    OwnedSession,
    free_ports,
    run,
    wait_for_banner,
    which,
)

HOSTNAME = "relay-peer.helpdesk.test"


def main_cf(directory: Path, nexthop: str, password_map: Path) -> dict[str, str]:
    """Every main.cf setting of the peer; Postfix's defaults for everything else."""
    return {
        # What it needs to run here at all, not tuning: the current defaults (Debian 12's stock
        # main.cf sets 3.6 too), where it lives, loopback only, a log file instead of syslog.
        "compatibility_level": "3.6",
        "queue_directory": str(directory / "queue"),
        "data_directory": str(directory / "data"),
        "myhostname": HOSTNAME,
        "inet_interfaces": LOOPBACK,
        "inet_protocols": "ipv4",
        "maillog_file": str(directory / "postfix.log"),
        "maillog_file_prefixes": str(directory),
        # What relaying through the customer's server needs (Postfix's SASL_README, "Enabling
        # SASL authentication in the Postfix SMTP/LMTP client"; TLS_README, "Mandatory TLS").
        "relayhost": nexthop,
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": f"hash:{password_map}",
        # The default (noplaintext, noanonymous) refuses PLAIN and LOGIN even inside TLS, and
        # they are what the customer's server offers (as Microsoft 365 and Gmail do).
        "smtp_sasl_security_options": "noanonymous",
        "smtp_tls_security_level": "encrypt",
        # Not defaults: what keeps the comparison from favouring smtpconn. The same speed
        # tuning the lab's inbound peer has (lab/postfix.py): no pause per message when the
        # queue manager is behind, no reverse lookup of the client. And the TLS connection
        # cache (Postfix >= 3.4, through tlsproxy(8)), since smtpconn reuses its outbound
        # session too: without it every reply pays its own TCP + TLS + AUTH.
        "in_flow_delay": "0s",
        "smtpd_peername_lookup": "no",
        "smtp_tls_connection_reuse": "yes",
    }


class PostfixRelayPeer(OwnedSession):
    """The second Postfix: one plain listener on ``port``, relaying to ``nexthop``."""

    def __init__(self, directory: Path, target_port: int, username: str, password: str) -> None:
        self.directory = directory
        self.config_dir = directory / "etc"
        self.log = directory / "postfix.log"
        self.port = free_ports(1)[0]
        self.target_port = target_port
        self.nexthop = f"[{LOOPBACK}]:{target_port}"
        self._credentials = f"{username}:{password}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def settings(self) -> dict[str, str]:
        """The main.cf settings (for the results file; the password map only by its path)."""
        return main_cf(self.directory, self.nexthop, self.config_dir / "sasl_passwd")

    def write_config(self) -> None:
        for sub in (self.config_dir, self.directory / "queue", self.directory / "data"):
            sub.mkdir(parents=True, exist_ok=True)
        pf = pwd.getpwnam("postfix")
        shutil.chown(self.directory / "data", pf.pw_uid, pf.pw_gid)
        password_map = self.config_dir / "sasl_passwd"
        password_map.write_text(f"{self.nexthop} {self._credentials}\n")
        password_map.chmod(0o600)  # as SASL_README says: the password is for root only
        backdate(password_map)
        main = self.config_dir / "main.cf"
        main.write_text(
            "# smtpconn benchmark: Postfix relaying the help desk's replies. Generated.\n"
            + "".join(f"{k} = {v}\n" for k, v in self.settings.items())
        )
        # The one listener: Debian's stock "smtp inet" line, on loopback, chroot off like every
        # lab service.
        master = self.config_dir / "master.cf"
        master.write_text(
            f"{LOOPBACK}:{self.port} inet n - n - - smtpd\n{MASTER_SERVICES}"
            # smtp_tls_connection_reuse hands the TLS of cached sessions to tlsproxy(8).
            "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
        )
        backdate(main)
        backdate(master)
        run([which("postmap"), "-c", str(self.config_dir), f"hash:{password_map}"], "postmap")

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        run([which("postfix"), "-c", str(self.config_dir), "check"], "postfix check")
        self.proc = spawn_master(self.config_dir, self.directory / "master.out")
        self.pid = self.proc.pid
        try:
            wait_bound(
                self.proc,
                [self.port],
                [self.directory / "master.out", self.log],
                timeout,
                "the Postfix relay peer",
            )
            wait_for_banner(LOOPBACK, self.port, timeout)
        except LabError:
            self.stop()
            raise

    def relayed(self) -> int:
        """Deliveries the log reports as sent through the customer's server (``nexthop``)."""
        rx = re.compile(
            rf"postfix/smtp\[\d+\]: \w+: to=<[^>]*>, relay={re.escape(LOOPBACK)}"
            rf"\[{re.escape(LOOPBACK)}\]:{self.target_port}, .*status=sent "
        )
        with contextlib.suppress(OSError):
            return len(rx.findall(self.log.read_text(errors="replace")))
        return 0

    def wait_relayed(self, expected: int, timeout: float = 10.0) -> int:
        """``relayed()`` once it reaches ``expected`` (the log is written asynchronously), or
        what it is at the deadline."""
        deadline = time.monotonic() + timeout
        while (n := self.relayed()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return n


@contextlib.contextmanager
def running_peer(
    base: Path, target_port: int, username: str, password: str
) -> Iterator[PostfixRelayPeer]:
    directory = Path(tempfile.mkdtemp(prefix="smtpconn-bench-pfrelay-", dir=base))
    # Postfix's unprivileged processes must reach the queue (mkdtemp makes it 0700).
    directory.chmod(0o755)
    peer = PostfixRelayPeer(directory, target_port, username, password)
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(directory, ignore_errors=True)
