"""Run-time settings shared by every command: where the profile is, which resolver and trust
anchors to use, how long to wait. The CLI fills this from options and environment variables;
library callers build it directly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROFILE = Path("smtpconn.toml")
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Settings:
    profile_path: Path = DEFAULT_PROFILE
    # (host, port) pairs; empty means the system's resolver configuration (/etc/resolv.conf).
    resolvers: tuple[tuple[str, int], ...] = ()
    ca_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT  # per network operation (one DNS question, one SMTP reply)
    insecure: bool = False  # skip certificate verification (loudly reported everywhere)
    verbose: bool = False
    json: bool = False
    no_color: bool = False
    # The HTTPS port of mta-sts.<domain>. Senders always use 443; a test hook
    # (SMTPCONN_MTA_STS_PORT) so that a lab can serve policies from an unprivileged port.
    mta_sts_port: int = 443
    # dns.blocklist: "ZONE" or "ZONE=DELISTING-URL" each (empty: the default lists), and public
    # addresses the mail is known to leave from besides the outbound server's own.
    blocklists: tuple[str, ...] = ()
    egress_addresses: tuple[str, ...] = ()
