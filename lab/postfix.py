"""The customer's mail server in the lab: Postfix, with Dovecot as its SASL server.

Both run from their OWN configuration in the lab directory (``postfix -c DIR``, ``dovecot -c``),
in the foreground under this process's control; /etc/postfix and /etc/dovecot are only read for
Postfix's compiled-in metadata (``meta_directory``) and never changed. Nothing runs chrooted and
everything listens on 127.0.0.1 only.

Listeners (``PostfixServer.ports[name]``; every one except ``mx`` accepts AUTH PLAIN/LOGIN for
the test users, checked by Dovecot):

===================  =======================================================================
``mx``               port-25 style: STARTTLS offered (not required), no AUTH. Accepts mail for
                     the lab domains (and relay domains) from anyone.
``submission``       RFC 6409: STARTTLS required, AUTH only after TLS, AUTH required to send.
``smtps``            RFC 8314 implicit TLS, AUTH required to send.
``no_starttls``      BAD: no TLS at all, AUTH offered (and accepted) in clear text.
``auth_before_tls``  BAD: STARTTLS offered, but AUTH also offered and accepted before it.
``expired``          BAD: like ``submission``, but the certificate expired yesterday.
``expiring``         WARN: like ``submission``, certificate valid for only 10 more days.
``wrong_host``       BAD: like ``submission``, cert (lab CA) is for wrong-host.example.test.
``untrusted``        BAD: like ``submission``, cert for mail.good.test from an untrusted CA.
``pool``             two nodes on one port: like ``submission`` on 127.0.0.1, but with the
                     expired certificate on 127.0.0.2 (``zones.POOL_HOST`` has both addresses).
``oauth_submission`` like ``submission``, but AUTH is XOAUTH2/OAUTHBEARER only, each token
                     checked by Dovecot's oauth2 passdb against the lab issuer (lab/oauth.py),
                     which a test starts on ``oauth_issuer_port`` (lab/oauth_sasl.py).
``bad_key``          STARTTLS offered, but the certificate and key do not match: Postfix answers
                     STARTTLS with ``454 4.7.0 TLS not available due to local problem``.
``signing``          like ``submission``, and OpenDKIM (lab/opendkim.py) signs what it accepts
                     with selector sel2048: the customer's server signs, not smtpconn.
``limited``          like ``submission``, but anvil(8) allows a client at most
                     ``LIMITED_CONNECTIONS`` sessions at once
                     (``smtpd_client_connection_count_limit``; 127.0.0.1 not exempt): one more
                     gets ``421 4.7.0 ... too many connections`` and the log says
                     ``Connection concurrency limit exceeded``.
``throttling``       like ``submission``, but a policy service (spawn(8) running
                     ``throttle_policy.py`` at end of DATA) accepts ``THROTTLE_AFTER`` messages,
                     then answers ``432 4.3.2 STOREDRV.ClientSubmit; sender thread limit
                     exceeded`` (Microsoft 365's reply) for ``THROTTLE_SECONDS``, then again.
``no_smtputf8``      like ``submission``, but SMTPUTF8 is not offered (``smtputf8_enable=no``);
                     every other listener offers it (``smtputf8_enable = yes``).
``no_pipelining``    like ``submission``, but PIPELINING (RFC 2920) is not offered
                     (``smtpd_discard_ehlo_keywords``); every other listener offers it.
``early_reject``     like ``submission``, but restrictions answer at once
                     (``smtpd_delay_reject=no``): ``SEND_AS_DENIED`` is refused at MAIL.
===================  =======================================================================

Delivery: every address at a lab mail domain (``lab.zones.DOMAINS`` except relay domains) is
delivered by Postfix's ``virtual`` agent into ``maildir_root/<domain>/<localpart>/`` (Maildir).
Mail to any other destination bounces at once (``default_transport = error``) so nothing sits in
the queue retrying forever.

Relay (the bidirectional mode's inbound leg): ``set_relay_target(domain, host, port, user,
password)`` makes Postfix relay mail for ``domain`` to ``[host]:port`` with STARTTLS required
(``smtp_tls_security_level = encrypt``; or ``secure`` = verified against the lab CA) and SMTP
AUTH (``smtp_sasl_auth_enable``). Until a target is set, RCPT for a relay domain gets
``450 4.4.1`` (try again later). Once set, a target that is down means the message is deferred
in the queue and retried every second or two, so a test that (re)starts its listener sees
delivery within seconds (``flush()`` retries at once).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import pwd
import re
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from lab import zones
from lab.ca import CertFiles, LabCA
from lab.proc import (
    LOOPBACK,
    LabError,
    ListeningDaemon,
    cmdline,
    free_ports,
    run,
    session_members,
    session_owns_port,
    spawn,
    stop_session,
    tail,
    wait_for_banner,
    wait_until,
    which,
)


@dataclass(frozen=True)
class TestUser:
    """A SASL user of the lab's Postfix (checked by Dovecot); its mail goes to its Maildir."""

    __test__ = False  # not a pytest test class

    username: str
    password: str

    @property
    def address(self) -> str:
        return self.username


#: The test users. Usernames are full addresses; each one's mail lands in its own Maildir.
USERS: tuple[TestUser, ...] = (
    TestUser("alice@good.test", "alice-lab-password"),
    TestUser("bob@good.test", "bob-lab-password"),
)
DEFAULT_USER = USERS[0]

#: Role addresses that get a Maildir of their own on every lab mail domain.
MAILBOX_LOCALPARTS: tuple[str, ...] = ("support", "postmaster", "dmarc", "tlsrpt")

#: A sender the lab's logged-in user may not send as: Postfix answers with Microsoft 365's own
#: reply (``550 5.7.60``), so the reply-code catalogue is tested against a real server's answer.
SEND_AS_DENIED = "notmine@good.test"
SEND_AS_DENIED_REPLY = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
#: A recipient the lab Postfix refuses with that same reply, so that a reply the relay sends to
#: it bounces with the server's real answer (the relay always sends as the support address).
SEND_AS_DENIED_RCPT = "sendas-refused@good.test"

#: Listener names, in a stable order (ports are allocated in this order).
PORT_NAMES: tuple[str, ...] = (
    "mx",
    "submission",
    "smtps",
    "no_starttls",
    "auth_before_tls",
    "expired",
    "expiring",
    "wrong_host",
    "untrusted",
    "oauth_submission",
    "signing",
    "limited",
    "throttling",
    "pool",
    "bad_key",
    "no_smtputf8",
    "no_pipelining",
    "early_reject",
)
#: Sessions at once a client may have on the ``limited`` port.
LIMITED_CONNECTIONS = 2
#: Messages the ``throttling`` port accepts before it throttles, and for how long it does.
THROTTLE_AFTER = 3
THROTTLE_SECONDS = 3
THROTTLE_REPLY = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"
#: Listeners that speak TLS from the first byte (RFC 8314).
IMPLICIT_TLS_PORTS = frozenset({"smtps"})

#: master.cf's internal services, as in Debian's stock master.cf but with chroot off (column 5
#: ``n``: nothing to copy into a jail, and lab directories are private). The lab Postfix and the
#: benchmarks' relay peer (benchmarks/postfix_peer.py) both use it.
MASTER_SERVICES = """pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

#: UID/GID the virtual delivery agent writes the Maildirs as. Postfix refuses to deliver as root
#: (virtual_minimum_uid); nobody/nogroup exists everywhere. Root (the tests) can read them.
_VMAIL_ID = 65534


class DovecotSasl(ListeningDaemon):
    """Dovecot, only as a SASL server for Postfix (``protocols = none``), on an inet listener.

    An inet listener (rather than a unix socket inside Postfix's queue) avoids socket ownership
    and chroot trouble: Postfix connects with ``smtpd_sasl_path = inet:127.0.0.1:PORT``.
    """

    def __init__(self, directory: Path, users: Iterable[TestUser], port: int) -> None:
        self.directory = directory
        self.users = tuple(users)
        self.host = LOOPBACK
        self.port = port
        self.conf = directory / "dovecot.conf"
        self.log = directory / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def write_config(self) -> None:
        d = self.directory
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        passwd = d / "users"
        # PLAIN scheme: a throw-away lab password file. The auth process runs as the dovecot
        # user, so the file must be readable by it.
        passwd.write_text("".join(f"{u.username}:{{PLAIN}}{u.password}\n" for u in self.users))
        passwd.chmod(0o644)
        # A distinct instance_name keeps our processes' titles apart from a system Dovecot.
        self.conf.write_text(
            f"""# smtpconn lab: Dovecot as SASL server for the lab's Postfix only.
base_dir = {d / "run"}
state_dir = {d / "state"}
instance_name = smtpconn-lab-{self.port}
protocols = none
listen = {self.host}
log_path = {self.log}
ssl = no
auth_mechanisms = plain login
# Postfix only hands AUTH to us after its own TLS rules allow it (smtpd_tls_auth_only), and the
# bad ports deliberately accept AUTH in clear text, so Dovecot must not refuse plaintext itself.
disable_plaintext_auth = no
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={_VMAIL_ID} gid={_VMAIL_ID} home=/nonexistent
}}
service auth {{
  inet_listener sasl {{
    address = {self.host}
    port = {self.port}
  }}
}}
# Tests try wrong passwords on purpose, all from 127.0.0.1: no 2 s failure delay, and no
# per-IP auth penalty (anvil would slow every later AUTH of the run, up to 15 s). A mode-0
# penalty socket is Dovecot's documented way to switch the penalty off.
auth_failure_delay = 0
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )

    def start(self, timeout: float = 15.0) -> None:
        self.write_config()
        argv = [which("dovecot"), "-F", "-c", str(self.conf)]
        self.launch(argv, "Dovecot auth", timeout)


@dataclass(frozen=True)
class RelayTarget:
    domain: str
    host: str
    port: int
    username: str
    password: str
    tls: str  # "encrypt" (TLS required, cert not checked) or "secure" (verified, lab CA)
    match: str

    @property
    def nexthop(self) -> str:
        # Brackets: never look the host up in DNS (no MX lookup), connect to it as given.
        return f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class Delivered:
    """A message found in a Maildir."""

    path: Path
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def delivered_to(self) -> str:
        """The final recipient, from the Delivered-To header virtual(8) prepends (lower case)."""
        head = self.raw.split(b"\n\n", 1)[0]
        for line in head.splitlines():
            if line.lower().startswith(b"delivered-to:"):
                return line.split(b":", 1)[1].strip().decode(errors="replace").lower()
        return ""


class PostfixServer:
    """Postfix (+ Dovecot SASL) under ``directory``; see the module docstring for the ports."""

    def __init__(
        self,
        directory: Path,
        ca: LabCA,
        users: Iterable[TestUser] = USERS,
        ports: Mapping[str, int] | None = None,
        sasl_port: int | None = None,
        signing_key: Path | None = None,
        milter_port: int | None = None,
    ) -> None:
        self.directory = directory
        self.ca = ca
        self.users = tuple(users)
        self.host = LOOPBACK
        if ports is None:
            allocated = free_ports(len(PORT_NAMES) + 1)
            ports = dict(zip(PORT_NAMES, allocated, strict=False))
            sasl_port = sasl_port or allocated[-1]
        self.ports: dict[str, int] = dict(ports)
        self.sasl_port = sasl_port if sasl_port is not None else free_ports(1)[0]
        from lab.oauth_sasl import DovecotOAuth

        # The OAuth SASL server's port, and the one the lab issuer binds when a test starts it.
        self.oauth_sasl_port, self.oauth_issuer_port = free_ports(2)
        self.oauth_dovecot = DovecotOAuth(
            directory / "dovecot-oauth", self.oauth_sasl_port, self.oauth_issuer_port, ca.ca_cert
        )
        from lab.opendkim import OpenDkimSigner

        # The signing port's milter: the customer's server DKIM-signs what it sends there.
        self.signing_key = signing_key
        self.opendkim = OpenDkimSigner(directory / "opendkim", milter_port or free_ports(1)[0])
        self.config_dir = directory / "etc"
        self.queue_dir = directory / "queue"
        self.data_dir = directory / "data"
        self.maildir_root = directory / "mail"
        self.maps_dir = directory / "maps"
        self.log = directory / "postfix.log"
        self.throttle_dir = directory / "throttle"
        self.dovecot = DovecotSasl(directory / "dovecot", self.users, self.sasl_port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.relay_targets: dict[str, RelayTarget] = {}
        self.relay_domains: set[str] = {zones.RELAY_DOMAIN}

    def all_ports(self) -> list[int]:
        """Every port this server binds (SMTP listeners and Dovecot's auth listener)."""
        return [*self.ports.values(), self.sasl_port, self.oauth_sasl_port, self.opendkim.port]

    # -- configuration --------------------------------------------------------------------

    @property
    def mailbox_domains(self) -> list[str]:
        return [d.name for d in zones.DOMAINS if d.name not in self.relay_domains]

    def _postfix(self, *args: str, timeout: float = 60.0) -> str:
        return run(
            [which("postfix"), "-c", str(self.config_dir), *args],
            f"postfix {args[0]}",
            timeout=timeout,
        )

    def _write_map(self, name: str, entries: Mapping[str, str]) -> Path:
        path = self.maps_dir / name
        path.write_text("".join(f"{k} {v}\n" for k, v in sorted(entries.items())))
        # sasl_passwd holds the relay's password: keep it from other users, as in production.
        path.chmod(0o600 if name == "sasl_passwd" else 0o644)
        backdate(path)
        return path

    def _mailbox_entries(self) -> dict[str, str]:
        """virtual_mailbox_maps: address (or "@domain" catch-all) -> Maildir path ("/" at the end).

        virtual(8) refuses regexp substitutions for safety, so per-address Maildirs exist for the
        test users and the usual role addresses; every other address of a domain lands in
        ``<domain>/catchall/``. ``messages(address)`` filters on Delivered-To, so callers never
        need to know which.
        """
        entries: dict[str, str] = {}
        for dom in self.mailbox_domains:
            for local in MAILBOX_LOCALPARTS:
                entries[f"{local}@{dom}"] = f"{dom}/{local}/"
            entries[f"@{dom}"] = f"{dom}/catchall/"
        for u in self.users:
            local, _, dom = u.address.rpartition("@")
            entries[u.address] = f"{dom}/{local}/"
        return entries

    def _write_maps(self) -> None:
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        targets = self.relay_targets.values()
        maps = [
            self._write_map("mailbox_domains", {d: "OK" for d in self.mailbox_domains}),
            self._write_map("mailboxes", self._mailbox_entries()),
            self._write_map("relay_domains", {d: "OK" for d in sorted(self.relay_domains)}),
            self._write_map("transport", {t.domain: f"smtp:{t.nexthop}" for t in targets}),
            self._write_map(
                "sasl_passwd", {t.nexthop: f"{t.username}:{t.password}" for t in targets}
            ),
            self._write_map(
                "tls_policy",
                {
                    t.nexthop: "encrypt" if t.tls == "encrypt" else f"secure match={t.match}"
                    for t in targets
                },
            ),
        ]
        # One postmap for all maps: each run costs ~0.3 s of start-up.
        run([which("postmap"), "-c", str(self.config_dir), *(f"hash:{m}" for m in maps)], "postmap")

    def _pool(self, opts: tuple[str, ...]) -> list[str]:
        """The same port on both pool addresses, the second node with the expired certificate
        (an explicit address in master.cf is bound whatever inet_interfaces says)."""
        if "pool" not in self.ports:  # a lab state written before the pool existed
            return []
        port = self.ports["pool"]
        expired = [
            f"{zones.POOL_ADDRS[1]}:{port} inet n - n - - smtpd",
            "  -o syslog_name=postfix/pool-expired",
            f"  -o smtpd_tls_chain_files={self.ca.expired.key},{self.ca.expired.cert}",
            *(f"  -o {o}" for o in opts),
        ]
        return [self._service("pool", *opts), "\n".join(expired)]

    def _service(self, name: str, *opts: str, chain: CertFiles | None = None) -> str:
        port = self.ports[name]
        lines = [f"{self.host}:{port} inet n - n - - smtpd", f"  -o syslog_name=postfix/{name}"]
        if chain is not None:
            lines.append(f"  -o smtpd_tls_chain_files={chain.key},{chain.cert}")
        lines += [f"  -o {o}" for o in opts]
        return "\n".join(lines)

    def write_config(self) -> None:
        d = self.directory
        for sub in (self.config_dir, self.data_dir, self.queue_dir, self.maildir_root):
            sub.mkdir(parents=True, exist_ok=True)
        # The virtual agent creates <domain>/<user>/ Maildirs as nobody: it must own the root.
        os.chown(self.maildir_root, _VMAIL_ID, _VMAIL_ID)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        (self.maps_dir).mkdir(exist_ok=True)
        m = self.maps_dir
        sub_auth = (
            "smtpd_sasl_auth_enable=yes",
            "smtpd_tls_auth_only=yes",
            "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        )
        required_tls = ("smtpd_tls_security_level=encrypt", *sub_auth)
        ca = self.ca
        (self.config_dir / "main.cf").write_text(
            f"""# smtpconn lab: the customer's mail server. Generated; do not edit.
compatibility_level = 3.6
smtputf8_enable = yes
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = {zones.MAIL_HOST}
mydomain = good.test
myorigin = $myhostname
mydestination =
inet_interfaces = {self.host}
inet_protocols = ipv4
# Nobody is trusted by address: every client is 127.0.0.1 here, so relaying must depend on
# SASL alone (no permit_mynetworks anywhere).
mynetworks = 127.0.0.1/32
maillog_file_prefixes = {d}
maillog_file = {self.log}
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled in the lab
biff = no
append_dot_mydomain = no
delay_warning_time = 0h
smtpd_banner = $myhostname ESMTP smtpconn-lab
# Tests must not be slowed by tarpitting, reverse lookups of 127.0.0.1 or flow control.
smtpd_error_sleep_time = 0s
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 200
smtpd_peername_lookup = no
in_flow_delay = 0s

# Mailboxes (Maildir, delivered by virtual(8)).
virtual_mailbox_domains = hash:{m / "mailbox_domains"}
virtual_mailbox_maps = hash:{m / "mailboxes"}
virtual_mailbox_base = {self.maildir_root}
virtual_uid_maps = static:{_VMAIL_ID}
virtual_gid_maps = static:{_VMAIL_ID}
virtual_transport = virtual

# Relay domains: sent on to a host:port the test chooses (transport map) with TLS + AUTH.
relay_domains = hash:{m / "relay_domains"}
relay_recipient_maps =
transport_maps = hash:{m / "transport"}
relay_transport = retry:4.4.1 no relay target set for this domain yet (lab: set_relay_target)
# Anything else cannot be delivered from an offline lab: bounce at once instead of retrying.
default_transport = error:5.4.4 the lab delivers only to lab domains and relay targets

smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ {SEND_AS_DENIED_RCPT} = {SEND_AS_DENIED_REPLY} }} }}
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions = check_sender_access inline:{{ {{ {SEND_AS_DENIED} = {SEND_AS_DENIED_REPLY} }} }}

# SASL (server side): Dovecot over TCP on loopback.
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{self.host}:{self.sasl_port}
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_sasl_authenticated_header = yes
broken_sasl_auth_clients = no
smtpd_tls_auth_only = yes

# TLS (server side).
smtpd_tls_chain_files = {ca.server.key}, {ca.server.cert}
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1

# SMTP client: relay targets. TLS is mandatory and AUTH is never sent in clear.
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = hash:{m / "sasl_passwd"}
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = plain, login
smtp_tls_security_level = encrypt
smtp_tls_policy_maps = hash:{m / "tls_policy"}
smtp_tls_CAfile = {ca.ca_cert}
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_loglevel = 1
# Offline and loopback only: targets are [ip]:port, so never ask DNS (it could hang).
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtp_connect_timeout = 5s
# Retry within seconds, so a test whose listener comes back sees delivery quickly.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
"""
        )
        services = [
            self._service("mx", "smtpd_sasl_auth_enable=no"),
            self._service("submission", *required_tls),
            self._service("smtps", "smtpd_tls_wrappermode=yes", *sub_auth),
            self._service(
                "oauth_submission",
                *required_tls,
                f"smtpd_sasl_path=inet:{self.host}:{self.oauth_sasl_port}",
            ),
            self._service(
                "no_starttls",
                "smtpd_tls_security_level=none",
                "smtpd_sasl_auth_enable=yes",
                "smtpd_tls_auth_only=no",
                "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
            ),
            self._service(
                "auth_before_tls",
                "smtpd_tls_security_level=may",
                "smtpd_sasl_auth_enable=yes",
                "smtpd_tls_auth_only=no",
                "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
            ),
            self._service(
                "signing",
                *required_tls,
                f"smtpd_milters={self.opendkim.milter}",
                # No signature, no mail: never let an unsigned message through as if signed.
                "milter_default_action=tempfail",
            ),
            self._service("no_smtputf8", *required_tls, "smtputf8_enable=no"),
            self._service("no_pipelining", *required_tls, "smtpd_discard_ehlo_keywords=pipelining"),
            # The sender restriction answers MAIL itself instead of waiting for RCPT.
            self._service("early_reject", *required_tls, "smtpd_delay_reject=no"),
            # The server's certificate with another certificate's key: Postfix cannot load them,
            # still offers STARTTLS and answers it "454 4.7.0 TLS not available due to local
            # problem", the classic outage after a certificate renewal.
            self._service(
                "bad_key",
                "smtpd_tls_security_level=may",
                "smtpd_sasl_auth_enable=yes",
                "smtpd_tls_auth_only=yes",
                chain=CertFiles(cert=ca.server.cert, key=self.directory / "missing-key.pem"),
            ),
            self._service("expired", *required_tls, chain=ca.expired),
            self._service("expiring", *required_tls, chain=ca.expiring),
            self._service("wrong_host", *required_tls, chain=ca.wrong_host),
            self._service("untrusted", *required_tls, chain=ca.untrusted),
            self._service(
                "limited",
                *required_tls,
                f"smtpd_client_connection_count_limit={LIMITED_CONNECTIONS}",
                # Default: $mynetworks (127.0.0.1) is exempt, and every lab client is there.
                "smtpd_client_event_limit_exceptions=",
            ),
            self._service(
                "throttling",
                *required_tls,
                "smtpd_end_of_data_restrictions=check_policy_service,unix:private/throttle_policy",
            ),
            *self._pool(required_tls),
        ]
        self._write_throttle_policy()
        # chroot column = n everywhere: nothing to copy into a jail, and the lab dir is private.
        (self.config_dir / "master.cf").write_text(
            "# smtpconn lab: generated; do not edit.\n"
            + "\n".join(services)
            + "\n"
            + MASTER_SERVICES
            + f"throttle_policy unix - n n - 0 spawn user=nobody argv=/usr/bin/python3 "
            f"{self.throttle_dir / 'throttle_policy.py'} {self.throttle_dir / 'state.json'} "
            f"{THROTTLE_AFTER} {THROTTLE_SECONDS}\n"
        )
        backdate(self.config_dir / "main.cf")
        backdate(self.config_dir / "master.cf")
        self._write_maps()

    def _write_throttle_policy(self) -> None:
        """The ``throttling`` port's policy server (stdlib only; spawn(8) runs one per smtpd
        connection as nobody, so the count lives in a locked file shared by all of them)."""
        self.throttle_dir.mkdir(exist_ok=True)
        os.chown(self.throttle_dir, _VMAIL_ID, _VMAIL_ID)
        script = self.throttle_dir / "throttle_policy.py"
        script.write_text(_THROTTLE_POLICY.replace("@REPLY@", THROTTLE_REPLY))
        script.chmod(0o644)

    def reset_throttle(self) -> None:
        """Start the ``throttling`` port's count afresh (a test's first message is number 1)."""
        with contextlib.suppress(FileNotFoundError):
            (self.throttle_dir / "state.json").unlink()

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.dovecot.start()
        self.oauth_dovecot.start()
        if self.signing_key is not None:
            self.opendkim.start(self.signing_key)
        try:
            # "postfix check" creates the queue directories with the right owners and checks
            # the configuration; then master runs in the foreground (-s) under our control, so
            # its pid is the Popen's and its children share its session.
            self._postfix("check")
            self.proc = spawn_master(self.config_dir, self.directory / "master.out")
            self.pid = self.proc.pid
            wait_bound(
                self.proc,
                list(self.ports.values()),
                [self.directory / "master.out", self.log],
                timeout,
                "Postfix master",
            )
            for name, port in self.ports.items():
                wait_for_banner(self.host, port, timeout, tls=name in IMPLICIT_TLS_PORTS)
        except LabError:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            if self.pid is not None:
                stop_session(self.pid, proc=self.proc)
                self.pid = None
                self.proc = None
        finally:
            self.dovecot.stop()
            self.oauth_dovecot.stop()
            self.opendkim.stop()

    def pids(self) -> list[int]:
        """Session leaders this server started (Postfix master, Dovecot, OpenDKIM)."""
        leaders = (self.pid, self.dovecot.pid, self.oauth_dovecot.pid, self.opendkim.pid)
        return [p for p in leaders if p is not None]

    # -- relay transport -------------------------------------------------------------------

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
        """Relay mail for ``domain`` to ``host:port`` with STARTTLS required and SMTP AUTH.

        ``tls="encrypt"`` requires TLS without checking the certificate (Postfix's usual
        relay setting); ``tls="secure"`` also verifies it against the lab CA for the name
        ``match``. Takes effect before this returns (maps rebuilt, Postfix reloaded).
        """
        if tls not in ("encrypt", "secure"):
            raise ValueError("tls must be 'encrypt' or 'secure'")
        target = RelayTarget(domain.lower(), host, port, username, password, tls, match)
        self.relay_domains.add(target.domain)
        self.relay_targets[target.domain] = target
        self._apply_maps()
        return target

    def clear_relay_target(self, domain: str) -> None:
        """Forget the target for ``domain``.

        For ``RELAY_DOMAIN`` mail is refused with 450 again until a new target is set; any other
        domain stops being a relay domain, so mail still queued for it bounces instead of being
        retried every second for the rest of the run.
        """
        domain = domain.lower()
        self.relay_targets.pop(domain, None)
        if domain != zones.RELAY_DOMAIN:
            self.relay_domains.discard(domain)
        self._apply_maps()

    def _apply_maps(self) -> None:
        self._write_maps()
        if self.pid is not None:
            self.reload()

    def reload(self, timeout: float = 10.0) -> None:
        """``postfix reload`` and wait until the pre-reload routing daemons have gone.

        Running daemons cache lookups (trivial-rewrite's resolve cache, open map files); they
        only pick up new maps once replaced. Idle ones exit within ~0.1 s of a reload, and
        waiting for them makes the change apply to the next message instead of "probably, in
        a moment". A daemon busy with a long session only finishes that session before it
        exits, so the wait is capped and not an error.
        """
        assert self.pid is not None
        old = set(session_members(self.pid)) - {self.pid}
        self._postfix("reload")
        # postlogd/anvil/scache/tlsmgr hold no routing state; do not wait for them.
        routing = {p for p in old if _is_routing_daemon(p)}
        with contextlib.suppress(LabError):
            wait_until(
                lambda: not routing & set(session_members(self.pid or 0)),
                timeout,
                "Postfix daemons to restart after reload",
            )

    def flush(self) -> None:
        """Ask Postfix to retry every deferred message now (``postqueue -f``)."""
        run([which("postqueue"), "-c", str(self.config_dir), "-f"], "postqueue -f")

    def queue(self) -> str:
        """The queue listing (``postqueue -p``), for test failure messages."""
        return subprocess.run(
            [which("postqueue"), "-c", str(self.config_dir), "-p"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    # -- log ---------------------------------------------------------------------------------

    def log_position(self) -> int:
        """Current size of Postfix's log: pass to ``wait_for_log(since=...)``."""
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = 20.0) -> re.Match[str]:
        """Wait until a line matching the regex ``pattern`` is logged after offset ``since``."""
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            m = rx.search(self.log_text(since))
            if m:
                found.append(m)
            return m is not None

        try:
            wait_until(seen, timeout, f"Postfix log line matching {pattern!r}")
        except LabError as e:
            raise LabError(f"{e}\nlog since then:\n{self.log_text(since)[-4000:]}") from None
        return found[0]

    # -- mailboxes -------------------------------------------------------------------------

    def messages(self, address: str | None = None) -> list[Delivered]:
        """Delivered messages (Maildir new/ and cur/), of one address or of all, oldest first.

        ``address`` is matched against the Delivered-To header that virtual(8) adds, so it works
        for catch-all deliveries too.
        """
        found: list[Path] = []
        for sub in ("new", "cur"):
            found += [p for p in self.maildir_root.glob(f"*/*/{sub}/*") if p.is_file()]
        out: list[Delivered] = []
        for path in sorted(found, key=lambda p: (p.stat().st_mtime, p.name)):
            with contextlib.suppress(OSError):
                d = Delivered(path, path.read_bytes())
                if address is None or d.delivered_to == address.lower():
                    out.append(d)
        return out

    def find_message(
        self, token: str | bytes, address: str | None = None, timeout: float = 20.0
    ) -> Delivered:
        """Wait until a message containing ``token`` (e.g. a unique Subject) is delivered.

        Raises ``LabError`` with the queue and the end of Postfix's log at the deadline.
        """
        needle = token.encode() if isinstance(token, str) else token
        deadline = time.monotonic() + timeout
        while True:
            for d in self.messages(address):
                if needle in d.raw:
                    return d
            if time.monotonic() >= deadline:
                raise LabError(
                    f"no message containing {token!r} delivered"
                    f"{' to ' + address if address else ''} within {timeout}s\n"
                    f"queue:\n{self.queue()}\nlog:\n{tail(self.log, 40)}"
                )
            time.sleep(0.05)


_THROTTLE_POLICY = """# smtpconn lab: a Postfix policy server (SMTPD_POLICY_README) that throttles like
# Microsoft 365. Generated; do not edit.
import fcntl, json, sys, time

state_path, after, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])


def decide():
    with open(state_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        try:
            state = json.loads(handle.read() or "{}")
        except ValueError:
            state = {}
        now = time.time()
        until = state.get("until", 0)
        if until and now >= until:
            state = {}
        if now < state.get("until", 0):
            action = "@REPLY@"
        else:
            state["count"] = state.get("count", 0) + 1
            if state["count"] > after:
                state["until"] = now + seconds
                action = "@REPLY@"
            else:
                action = "DUNNO"
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(state))
    return action


request = {}
for line in sys.stdin:
    line = line.rstrip("\\n")
    if line:
        name, _, value = line.partition("=")
        request[name] = value
        continue
    action = decide() if request.get("protocol_state") == "END-OF-MESSAGE" else "DUNNO"
    sys.stdout.write("action=" + action + "\\n\\n")
    sys.stdout.flush()
    request = {}
"""


def spawn_master(config_dir: Path, output: Path) -> subprocess.Popen[bytes]:
    """Postfix's master for ``config_dir`` in the foreground (``-s``) under the caller's control:
    its pid is the Popen's and its children share its session, so stopping that session stops
    exactly this Postfix."""
    return spawn([which("master", ("/usr/lib/postfix/sbin",)), "-c", str(config_dir), "-s"], output)


def wait_bound(
    master: subprocess.Popen[bytes], ports: list[int], logs: list[Path], timeout: float, what: str
) -> None:
    """Until ``master``'s session holds every port of ``ports``; LabError with the tails of
    ``logs`` (its output, Postfix's log) if it exits first."""

    def bound() -> bool:
        if master.poll() is not None:
            tails = "\n".join(tail(log) for log in logs)
            raise LabError(f"{what} exited with {master.returncode}:\n{tails}")
        return all(session_owns_port(master.pid, port) for port in ports)

    wait_until(bound, timeout, f"{what} to bind its ports")


def backdate(path: Path) -> None:
    """Set a config file's mtime 2 s into the past.

    Postfix programs re-read (0.3 s apart, up to ~2 s) any config or map file modified in the
    current second, in case it is still being written. Ours are complete when written, so this
    saves ~2 s per start, postmap and reload.
    """
    t = time.time() - 2
    os.utime(path, (t, t))


_ROUTING = re.compile(r"^(trivial-rewrite|qmgr|smtp|cleanup|smtpd|pickup|error|virtual)\b")


def _is_routing_daemon(pid: int) -> bool:
    argv = cmdline(pid)
    return bool(argv) and bool(_ROUTING.match(Path(argv[0]).name))
