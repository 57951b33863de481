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
``SMTPCONN_BOUNCE_OF``, ``SMTPCONN_AUTH`` (``pass``/``fail``/``none`` for unauthenticated mail),
``SMTPCONN_SMTPUTF8`` (``1`` when the message came with SMTPUTF8: its addresses and header may
be UTF-8, passed as they are).
Control characters in a value arrive escaped (a CR as the two characters ``\\r``), so
a value can never break a line the command writes. A value holding a NUL byte cannot be put
in an environment at all: that message is held (permanent failure), not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from typing import ClassVar

from smtpconn.message.escaping import escape_controls
from smtpconn.profile.model import SinkKind, SinkSettings
from smtpconn.relay.sinks.base import SinkContext, SinkError, SinkItem

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
    "auth",
    "smtputf8",
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
        if isinstance(value, bool):
            value = "1" if value else None  # a flag: set to 1, or absent
        if not isinstance(value, str | int | float):
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
    kind = SinkKind.PIPE
    concurrency: ClassVar[int | None] = None
    dedupes: ClassVar[bool] = False  # the receiving side may see a repeat (SinkItem.id)

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None:
        assert settings.command
        self.command = list(settings.command)
        self.timeout = context.timeout
        self.cwd = context.base_dir

    @staticmethod
    def problems(settings: SinkSettings, context: SinkContext) -> list[str]:
        if not settings.command or shutil.which(program := settings.command[0]) is not None:
            return []
        hint = (
            " (command is an array of arguments, e.g. "
            f"command = {json.dumps(program.split())}; no shell is used)"
            if " " in program.strip()
            else ""
        )
        return [
            f"relay.sink.command: {program} is not an executable file "
            f"(not found, or not executable){hint}"
        ]

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
