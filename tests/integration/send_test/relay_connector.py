"""A connector set up the way an administrator would: ``[relay]`` written by hand, addresses
added with the real ``smtpconn add-address`` (so the inbound password is generated, written to a
0600 file and only hashed in the profile), and ``smtpconn relay`` running as its own process.

Used by the inbound and round-trip send-test tests; the relay process itself is started by the
relay engineer's ``relay_process`` fixture (tests/integration/relay/conftest.py).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from lab.lab import Lab
from lab.proc import free_ports
from smtpconn.settings import Settings
from tests.conftest import CliInvoker
from tests.integration.relay.conftest import RelayEnv

OUTBOUND_SECRET_ENV = "SMTPCONN_TEST_SENDTEST_OUTBOUND"
INBOUND_USER = "customer-relay"
RELAY_HOSTNAME = "relay.helpdesk.test"  # the name on the lab's relay certificate


@dataclass
class Connector:
    env: RelayEnv
    inbound_port: int
    bidirectional: str  # support@<domain>
    outbound_only: str  # forward@<domain>
    password_file: Path

    @property
    def profile(self) -> Path:
        return self.env.profile

    @property
    def inbound_password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()


def write_relay_table(lab: Lab, root: Path, inbound_port: int) -> Path:
    assert lab.ca is not None
    relay = {
        "inbound_listen": f"127.0.0.1:{inbound_port}",
        "submission_listen": "127.0.0.1:0",
        "tls_cert": str(lab.ca.relay.cert),
        "tls_key": str(lab.ca.relay.key),
        "spool": "spool",
        "hostname": RELAY_HOSTNAME,
        "sink": {"kind": "maildir", "path": "helpdesk"},
    }
    root.mkdir(parents=True, exist_ok=True)
    profile = root / "smtpconn.toml"
    profile.write_text(tomli_w.dumps({"version": 1, "relay": relay}), encoding="utf-8")
    profile.chmod(0o600)
    return profile


def add_addresses(
    lab: Lab, cli: CliInvoker, profile: Path, domain: str, *, signer: str = "smtpconn"
) -> Path:
    """``smtpconn add-address`` for support@domain (bidirectional) and forward@domain
    (outbound-only). When the lab publishes a DKIM key for the domain, ``signer`` says who signs
    support@'s mail: "smtpconn" (selector and key), "server" (the selector only, sent through
    the lab Postfix's signing port, whose OpenDKIM signs) or "nobody" (the selector only, but
    the plain submission port: the server's signature the profile promises never comes)."""
    password_file = profile.parent / "inbound-password"
    port_name = "signing" if signer == "server" else "submission"
    server = f"{lab.server_name}:{lab.ports[port_name]}"
    common = [
        "--server", server, "--security", "starttls", "--username", lab.user.username,
        "--secret", f"env:{OUTBOUND_SECRET_ENV}", "--profile", str(profile),
    ]  # fmt: skip
    dkim: list[str] = []
    try:
        selector, key = lab.dkim_key_for(domain)
        dkim = ["--dkim-selector", selector]
        if signer == "smtpconn":
            dkim += ["--dkim-key", str(key.path)]
    except KeyError:
        pass  # a per-test relay domain: not in the lab's DNS, so nothing to sign for
    added = cli(
        "add-address", f"support@{domain}", "--mode", "bidirectional", *common, *dkim,
        "--inbound-username", INBOUND_USER, "--inbound-password-file", str(password_file),
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    added = cli("add-address", f"forward@{domain}", "--mode", "outbound-only", *common)
    assert added.exit_code == 0, added.output
    return password_file


def make_connector(
    lab: Lab, cli: CliInvoker, root: Path, domain: str, *, signer: str = "smtpconn"
) -> Connector:
    inbound_port = free_ports(1)[0]
    profile = write_relay_table(lab, root, inbound_port)
    password_file = add_addresses(lab, cli, profile, domain, signer=signer)
    host, _, port = lab.resolver.rpartition(":")
    settings = Settings(
        profile_path=profile, resolvers=((host, int(port)),), ca_file=lab.ca_file, timeout=3.0
    )
    env = RelayEnv(
        root=root,
        profile=profile,
        spool=root / "spool",
        maildir=root / "helpdesk",
        domain=domain,
        settings=settings,
        addresses={"bidirectional": f"support@{domain}", "outbound-only": f"forward@{domain}"},
    )
    return Connector(env, inbound_port, f"support@{domain}", f"forward@{domain}", password_file)


def assert_no_secret(text: str, secret: str, username: str | None = None) -> None:
    """Neither the secret nor its SASL encodings (LOGIN: base64 of it; PLAIN: of \\0user\\0it)."""
    assert secret not in text
    assert base64.b64encode(secret.encode()).decode() not in text
    if username is not None:
        blob = base64.b64encode(f"\0{username}\0{secret}".encode()).decode()
        assert blob not in text
