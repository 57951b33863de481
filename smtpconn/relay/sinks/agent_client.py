"""The relay's side of the Maildir delivery agent (:mod:`smtpconn.relay.agent`).

One agent per relay process, started on the first delivery (that copy, and any while the agent
starts, go through a worker thread as before). Requests are pipelined over a socket pair; each
waits for its own reply. If the agent exits, every request waiting for it fails with
:class:`AgentGone` (the Maildir sink then delivers that copy through a worker thread, checking
first for a copy the agent may have finished), the exit is logged, and a new agent is started
after a back-off (0.5 s, doubling up to 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import smtpconn
from smtpconn.errors import SmtpconnFailure
from smtpconn.relay.agent import FRAME, MAX_BODY, BadFrame, decode_header, encode_frame, frame_sizes
from smtpconn.relay.log import log_event

# -I: no current folder, PYTHONPATH or user site on the path; the relay's own copy of smtpconn
# goes first, so the agent always runs the same code as the relay that started it.
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from smtpconn.relay.agent import main; raise SystemExit(main(sys.argv[2:]))"
)
RESTART_FIRST = 0.5
RESTART_MAX = 60.0
STEADY_AFTER = 60.0  # an agent that lived this long resets the back-off
STOP_WAIT = 5.0


class AgentGone(SmtpconnFailure):
    """The agent exited before it answered: the copy may or may not have been made."""

    def __init__(self) -> None:
        super().__init__("the Maildir delivery agent exited before it answered")


def agent_command(fd: int) -> list[str]:
    root = Path(smtpconn.__file__).resolve().parent.parent
    return [sys.executable, "-I", "-c", _BOOT, str(root), str(fd)]


class DeliveryAgent:
    """Start, use and stop the agent; everything here runs on the event loop."""

    max_body = MAX_BODY

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sent = 0
        self._failures = 0
        self._started_at = 0.0
        self._not_before = 0.0
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def usable(self) -> bool:
        """True when the agent is running; otherwise it is started in the background (unless
        it failed lately) and the caller delivers this copy itself."""
        if self._writer is not None:
            return True
        if self._closed or self._starting is not None or time.monotonic() < self._not_before:
            return False
        self._starting = asyncio.get_running_loop().create_task(self._start(), name="maildir-agent")
        return False

    async def _start(self) -> None:
        parent, child = socket.socketpair()
        proc: subprocess.Popen[bytes] | None = None
        try:
            try:
                proc = await asyncio.to_thread(
                    subprocess.Popen,
                    agent_command(child.fileno()),
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    # Its exit code is logged; nothing it could print belongs in the relay's log.
                    stderr=subprocess.DEVNULL,
                )
            finally:
                child.close()
            reader, writer = await asyncio.open_unix_connection(sock=parent)
        except OSError as exc:
            parent.close()
            if proc is not None:
                await asyncio.to_thread(_reap, proc)
            self._failed_start(str(exc.strerror or exc))
            return
        finally:
            self._starting = None
        if self._closed:
            writer.close()
            await asyncio.to_thread(_reap, proc)
            return
        self._proc, self._writer, self._started_at = proc, writer, time.monotonic()
        self._reading = asyncio.get_running_loop().create_task(self._read(reader, proc))

    def _failed_start(self, error: str) -> None:
        delay = self._back_off()
        log_event("relay.agent-failed", logging.WARNING, error=error, restart_in=delay)

    def _back_off(self) -> float:
        delay = min(RESTART_MAX, RESTART_FIRST * float(2 ** min(self._failures, 8)))
        self._failures += 1
        self._not_before = time.monotonic() + delay
        return delay

    async def _read(self, reader: asyncio.StreamReader, proc: subprocess.Popen[bytes]) -> None:
        try:
            while True:
                header_size, body_size = frame_sizes(await reader.readexactly(FRAME.size))
                header = decode_header(await reader.readexactly(header_size))
                if body_size:
                    await reader.readexactly(body_size)
                waiter = self._waiting.pop(header.get("n", -1), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(header)
        except (asyncio.IncompleteReadError, BadFrame, OSError):
            pass  # the agent exited (or wrote nonsense, and is stopped below)
        finally:
            await self._gone(proc)

    async def _gone(self, proc: subprocess.Popen[bytes]) -> None:
        writer, self._writer, self._proc = self._writer, None, None
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(AgentGone())
        if writer is not None:
            writer.close()
        code = await asyncio.to_thread(_reap, proc)
        if self._closed:
            return
        if time.monotonic() - self._started_at >= STEADY_AFTER:
            self._failures = 0
        delay = self._back_off()
        log_event("relay.agent-exited", logging.WARNING, pid=proc.pid, code=code, restart_in=delay)

    async def deliver(
        self, tmp: Path, final: Path, body: bytes, unlink: Sequence[Path]
    ) -> tuple[str | None, OSError | None]:
        """Have the agent write ``body`` to ``tmp``, sync it, rename it to ``final``, sync that
        folder, then unlink ``unlink``. Returns (the copy's error, the unlinks' error); raises
        AgentGone if the agent exited first."""
        writer = self._writer
        if writer is None:
            raise AgentGone()
        self._sent += 1
        number = self._sent
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = waiter
        header = {
            "n": number,
            "tmp": str(tmp),
            "final": str(final),
            "unlink": [str(p) for p in unlink],
        }
        try:
            writer.write(encode_frame(header, body))
            await writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(number, None)
            raise AgentGone() from exc
        answer = await waiter
        error = answer.get("error")
        unlink_error = answer.get("unlink_error")
        removal = None
        if isinstance(unlink_error, list) and len(unlink_error) == 2:
            removal = OSError(int(unlink_error[0]), str(unlink_error[1]))
        return (str(error) if error is not None else None), removal

    async def aclose(self) -> None:
        """Stop the agent: it finishes what it was sent, sees the socket close and exits. One
        that has not exited within STOP_WAIT (a disk that stopped answering) is killed, so the
        relay's own stop never hangs on it; what it did not answer is delivered again at the
        next start (the sink then finds the copies it did make)."""
        self._closed = True
        if self._starting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.write_eof()
        if self._reading is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), STOP_WAIT)
        except TimeoutError:
            if self._proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()  # this very process (by its pid), never a name
            await self._reading


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()  # this very process (by its pid), never a name
        return proc.wait()
