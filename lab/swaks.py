"""A thin wrapper around swaks, the independent SMTP client the tests drive.

``swaks(...)`` passes its arguments through and returns ``(returncode, transcript)``;
``send(...)`` builds the usual arguments (server, TLS, AUTH, addresses, a token in the Subject).

Note: swaks 20201014 (Debian 12) verifies the certificate chain with ``--tls-verify`` but NOT the
host name; use ``openssl_verify`` below (``openssl s_client -verify_hostname``) for that.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from typing import NamedTuple

from lab.proc import which


class SwaksResult(NamedTuple):
    returncode: int
    #: stdout + stderr: the whole SMTP conversation as swaks prints it.
    transcript: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def queue_id(self) -> str | None:
        """Postfix's queue id from "250 2.0.0 Ok: queued as ID", if the message was accepted."""
        m = re.search(r"queued as ([0-9A-Za-z]+)", self.transcript)
        return m.group(1) if m else None


def swaks(*args: str, timeout: float = 60.0) -> SwaksResult:
    """Run ``swaks ARGS`` and return its exit code and transcript (never raises on failure)."""
    res = subprocess.run(
        [which("swaks"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return SwaksResult(res.returncode, res.stdout + res.stderr)


def send(
    port: int,
    *,
    host: str = "127.0.0.1",
    to: str = "alice@good.test",
    sender: str = "support@good.test",
    tls: str | None = "starttls",
    auth: tuple[str, str] | None = None,
    mechanism: str = "PLAIN",
    ca_file: str | None = None,
    subject: str = "smtpconn lab test",
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> SwaksResult:
    """Send one message with swaks.

    ``tls``: ``"starttls"`` (required: swaks fails if it can't), ``"optional"`` (STARTTLS if
    offered), ``"implicit"`` (RFC 8314) or ``None`` (plain text). ``ca_file``: verify the
    server's chain against it (``--tls-verify``). ``auth``: (username, password).
    """
    args = [
        "--server",
        f"{host}:{port}",
        "--to",
        to,
        "--from",
        sender,
        "--header",
        f"Subject: {subject}",
        "--timeout",
        "20",
    ]
    if tls == "starttls":
        args.append("--tls")
    elif tls == "optional":
        args.append("--tls-optional")
    elif tls == "implicit":
        args.append("--tls-on-connect")
    elif tls is not None:
        raise ValueError(f"unknown tls mode {tls!r}")
    if ca_file is not None:
        args += ["--tls-verify", "--tls-ca-path", ca_file]
    if auth is not None:
        args += ["--auth", mechanism, "--auth-user", auth[0], "--auth-password", auth[1]]
    return swaks(*args, *extra, timeout=timeout)


def openssl_verify(
    port: int,
    ca_file: str,
    hostname: str,
    *,
    host: str = "127.0.0.1",
    starttls: bool = True,
    timeout: float = 30.0,
) -> SwaksResult:
    """Handshake with ``openssl s_client`` verifying chain, validity AND host name.

    Returns (0, output) only if the certificate verifies for ``hostname`` against ``ca_file``.
    """
    args = [
        which("openssl"),
        "s_client",
        "-connect",
        f"{host}:{port}",
        "-CAfile",
        ca_file,
        "-verify_return_error",
        "-verify_hostname",
        hostname,
        "-servername",
        hostname,
        "-brief",
    ]
    if starttls:
        args += ["-starttls", "smtp"]
    res = subprocess.run(
        args, input="QUIT\r\n", capture_output=True, text=True, timeout=timeout, check=False
    )
    return SwaksResult(res.returncode, res.stdout + res.stderr)
