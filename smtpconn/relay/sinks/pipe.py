"""Pipe sink: run a command with the message on stdin (the ``rt-mailgate`` pattern).

Exit 0 = delivered; exit 75 (``EX_TEMPFAIL``), a signal or a time-out = retry later; any other
exit = permanent (held in the spool). Metadata is passed in the environment:
``SMTPCONN_ID``, ``SMTPCONN_MAIL_FROM``, ``SMTPCONN_RCPT``, ``SMTPCONN_TAG``
(``authenticated``/``unauthenticated``), ``SMTPCONN_MODE``, ``SMTPCONN_CLIENT_IP``,
``SMTPCONN_AUTH_USER``. The command is run directly (no shell), so addresses cannot inject.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from smtpconn.relay.config import RelayConfig
from smtpconn.relay.sinks.base import SinkError, SinkItem

EX_TEMPFAIL = 75


def environment(item: SinkItem) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in item.metadata().items():
        if isinstance(value, str | int | float | bool) and value is not None:
            env[f"SMTPCONN_{key.upper()}"] = str(value)
    return env


class PipeSink:
    kind = "pipe"

    def __init__(self, config: RelayConfig) -> None:
        assert config.sink.command
        self.command = list(config.sink.command)
        self.timeout = config.sink_timeout
        self.cwd = config.base_dir

    async def deliver(self, item: SinkItem) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=environment(item),
                cwd=self.cwd,
            )
        except OSError as exc:
            raise SinkError(f"cannot run {self.command[0]}: {exc.strerror}") from None
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
