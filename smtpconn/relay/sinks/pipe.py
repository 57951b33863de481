"""Pipe sink: run a command with the message on stdin (the ``rt-mailgate`` pattern).

Exit 0 = delivered; exit 75 (``EX_TEMPFAIL``), a signal or a time-out = retry later; any other
exit = permanent (held in the spool). The command is run directly (no shell), so addresses
cannot inject.

The environment is built from scratch, never inherited: the relay's own environment holds the
``env:`` secrets of the profile (the customer's SMTP passwords). The command sees ``PATH``,
``LANG`` and ``LC_ALL`` (when set) and the message's metadata: ``SMTPCONN_ID``,
``SMTPCONN_MAIL_FROM``, ``SMTPCONN_RCPT``, ``SMTPCONN_TAG`` (``authenticated``/
``unauthenticated``), ``SMTPCONN_MODE``, ``SMTPCONN_CLIENT_IP``, ``SMTPCONN_AUTH_USER``,
``SMTPCONN_HELO``, ``SMTPCONN_TLS``, ``SMTPCONN_SUPPORT_ADDRESS``, ``SMTPCONN_ORIGIN``,
``SMTPCONN_BOUNCE_OF``.
Control characters in a value arrive escaped (a CR as the two characters ``\\r``), so
a value can never break a line the command writes. A value holding a NUL byte cannot be put
in an environment at all: that message is held (permanent failure), not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from smtpconn.relay.config import RelayConfig
from smtpconn.relay.escaping import escape_controls
from smtpconn.relay.sinks.base import SinkError, SinkItem

EX_TEMPFAIL = 75


# The metadata the command is promised (module docstring); anything else in a spool entry's
# meta stays out of its environment.
METADATA_KEYS = (
    "id",
    "mail_from",
    "rcpt",
    "tag",
    "mode",
    "client_ip",
    "auth_user",
    "helo",
    "tls",
    "support_address",
    "origin",
    "bounce_of",
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def environment(item: SinkItem) -> dict[str, str]:
    """The command's whole environment; :class:`SinkError` (permanent) if the message's
    metadata cannot be carried in one."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    for name in ("LANG", "LC_ALL"):
        if name in os.environ:
            env[name] = os.environ[name]
    metadata = item.metadata()
    for key in METADATA_KEYS:
        value = metadata.get(key)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            continue
        text = str(value)
        if "\0" in text:
            raise SinkError(
                f"metadata {key} contains a NUL byte: it cannot be passed in the environment",
                permanent=True,
            )
        env[f"SMTPCONN_{key.upper()}"] = escape_controls(text)
    return env


class PipeSink:
    kind = "pipe"

    def __init__(self, config: RelayConfig) -> None:
        assert config.sink.command
        self.command = list(config.sink.command)
        self.timeout = config.sink_timeout
        self.cwd = config.base_dir

    async def deliver(self, item: SinkItem) -> None:
        env = environment(item)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.cwd,
            )
        except OSError as exc:
            raise SinkError(f"cannot run {self.command[0]}: {exc.strerror}") from None
        except ValueError as exc:  # the message's data cannot be handed to a process
            raise SinkError(f"cannot run {self.command[0]}: {exc}", permanent=True) from None
        try:
            _, stderr = await asyncio.wait_for(process.communicate(item.message), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise SinkError(f"{self.command[0]} did not finish in {self.timeout:g}s") from None
        code = process.returncode
        if code == 0:
            return
        reason = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        detail = f"{self.command[0]} exited {code}" + (f": {reason[0][:200]}" if reason[0] else "")
        raise SinkError(detail, permanent=code is not None and code > 0 and code != EX_TEMPFAIL)
