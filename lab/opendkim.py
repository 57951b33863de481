"""OpenDKIM as the signing milter of the lab Postfix's ``signing`` port: the customer's server
signs (as Microsoft 365 signs with ``selector1`` and Google with ``google``), so ``send-test
--direction roundtrip`` can prove the signature the server added, not one smtpconn made.

It signs mail for every lab domain whose DKIM key is ``main`` under selector ``sel2048`` (the
record the lab's NSD publishes for them), in the foreground (``-f``) under our own session so
the lab stops exactly the process it started.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab import zones
from lab.proc import (
    LOOPBACK,
    ListeningDaemon,
    which,
)

#: The selector the server signs with, and the domains it signs for.
SIGNING_SELECTOR = "sel2048"
SIGNING_KEY = "main"


def signed_domains() -> list[str]:
    return [
        d.name
        for d in zones.DOMAINS
        if d.dkim is not None
        and d.dkim.selector == SIGNING_SELECTOR
        and d.dkim.key == SIGNING_KEY
        and d.dkim.published in (None, SIGNING_KEY)
    ]


class OpenDkimSigner(ListeningDaemon):
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.host = LOOPBACK
        self.port = port
        self.conf = directory / "opendkim.conf"
        self.log = directory / "opendkim.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def milter(self) -> str:
        return f"inet:{self.host}:{self.port}"

    def write_config(self, key: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # OpenDKIM runs as its own user and must read the key; it refuses a key others can read
        # unless RequireSafeKeys is off, and the lab key is a throw-away one.
        own_key = self.directory / "signing.key"
        shutil.copyfile(key, own_key)
        own_key.chmod(0o644)
        self.conf.write_text(
            f"""# smtpconn lab: the customer's server signs its outgoing mail. Generated.
Syslog no
Mode s
Domain {",".join(signed_domains())}
Selector {SIGNING_SELECTOR}
KeyFile {own_key}
RequireSafeKeys no
Canonicalization relaxed/relaxed
Socket inet:{self.port}@{self.host}
UserID opendkim
UMask 022
PidFile {self.directory / "opendkim.pid"}
"""
        )

    def start(self, key: Path, timeout: float = 15.0) -> None:
        self.write_config(key)
        self.directory.chmod(0o755)
        self.launch([which("opendkim"), "-f", "-x", str(self.conf)], "OpenDKIM", timeout)
