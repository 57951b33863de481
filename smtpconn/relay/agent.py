"""The Maildir delivery agent: a child process that makes the relay's Maildir copies durable.

The relay's event loop does the hand-over (Authentication-Results, the tag, the headers) and
sends the finished copy here over a socket pair; this process writes it to ``tmp/``, syncs it,
renames it into ``new/``, syncs ``new/`` once for every copy of the batch, removes the spool
entry's names and answers. It is Postfix's split between smtpd and the delivery agent, for
the same reason: the disk work of one message then runs beside the reception of the next
instead of taking turns with it for one interpreter lock (in a worker thread, each of its dozen
system calls handed the lock back and forth with the event loop; benchmarks/README.md, item 20).

Frames, both ways, are ``!II`` (header length, body length), a JSON header and the body.
A request's header: ``{"n": id, "tmp": path, "final": path, "unlink": [path, ...]}``, its body
the bytes to write. A reply's header: ``{"n": id, "error": null | text, "unlink_error": null |
[errno, text]}``, no body. A reply is sent only after everything it reports on is done: the
copy synced, renamed and its folder synced, then the spool names removed.

The relay runs it with ``python -I -c`` (its own copy of smtpconn first on the path, see
``sinks/agent_client.py``); it imports nothing but the standard library, :mod:`smtpconn.durable`
and :mod:`smtpconn.errors`, so it starts in tens of milliseconds and stays small. It trusts its
parent (the frames come from the relay that started it, over a socket pair nobody else holds)
but not blindly: a frame it cannot read ends the process (exit 2), and the relay then delivers
through worker threads again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpconn.durable import fsync_dir, write_and_sync
from smtpconn.errors import SmtpconnFailure

FRAME = struct.Struct("!II")
MAX_HEADER = 64 * 1024
# The relay sends only copies up to this size (bigger ones go through a worker thread), so a
# frame announcing more is not the relay's.
MAX_BODY = 4 * 1024 * 1024
MAX_BATCH = 64  # requests done together: one folder sync, one burst of replies


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    data = json.dumps(header, separators=(",", ":")).encode("ascii")
    return FRAME.pack(len(data), len(body)) + data + body


class BadFrame(SmtpconnFailure):
    """What was read is not a frame this protocol sends."""


def frame_sizes(prefix: bytes) -> tuple[int, int]:
    header_size, body_size = FRAME.unpack(prefix)
    if header_size > MAX_HEADER or body_size > MAX_BODY:
        raise BadFrame(f"frame of {header_size} + {body_size} bytes is larger than allowed")
    return header_size, body_size


def decode_header(data: bytes) -> dict[str, Any]:
    try:
        header = json.loads(data)
    except ValueError as exc:
        raise BadFrame(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadFrame("header is not a JSON object")
    return header


@dataclass(slots=True)
class _Request:
    n: int
    tmp: str
    final: str
    unlink: list[str]
    body: bytes
    error: str | None = None
    unlink_error: tuple[int, str] | None = None

    @classmethod
    def of(cls, header: dict[str, Any], body: bytes) -> _Request:
        n, tmp, final, unlink = (header.get(k) for k in ("n", "tmp", "final", "unlink"))
        if not (
            isinstance(n, int)
            and isinstance(tmp, str)
            and isinstance(final, str)
            and isinstance(unlink, list)
            and all(isinstance(p, str) for p in unlink)
        ):
            raise BadFrame("request header lacks n, tmp, final or unlink")
        return cls(n, tmp, final, unlink, body)


class _Reader:
    """Whole frames from a blocking socket, and whatever further frames already arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def _take(self) -> _Request | None:
        """The next frame if the buffer holds all of it."""
        if len(self.buffer) < FRAME.size:
            return None
        header_size, body_size = frame_sizes(bytes(self.buffer[: FRAME.size]))
        end = FRAME.size + header_size + body_size
        if len(self.buffer) < end:
            return None
        header = decode_header(bytes(self.buffer[FRAME.size : FRAME.size + header_size]))
        body = bytes(self.buffer[FRAME.size + header_size : end])
        del self.buffer[:end]
        return _Request.of(header, body)

    def batch(self) -> list[_Request] | None:
        """Waits for one request, then takes what else has arrived (up to MAX_BATCH); None at
        the end of the stream (the relay closed its end, or exited)."""
        first = self._take()
        while first is None:
            if not self._fill(len(self.buffer) + 1):
                return None
            first = self._take()
        batch = [first]
        self.sock.setblocking(False)
        try:
            while len(batch) < MAX_BATCH:
                request = self._take()
                if request is None:
                    with contextlib.suppress(BlockingIOError):
                        chunk = self.sock.recv(1 << 20)
                        if chunk:
                            self.buffer += chunk
                            continue
                    request = self._take()
                    if request is None:
                        break
                batch.append(request)
        finally:
            self.sock.setblocking(True)
        return batch


def _write(request: _Request) -> None:
    try:
        write_and_sync(
            os.open(request.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
            request.body,
        )
        os.replace(request.tmp, request.final)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in a path
        with contextlib.suppress(OSError, ValueError):
            os.unlink(request.tmp)
        request.error = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _remove(request: _Request) -> None:
    for path in request.unlink:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            request.unlink_error = (exc.errno or 0, exc.strerror or str(exc))
            return


def serve_batch(batch: list[_Request]) -> None:
    """Every copy written, synced and renamed; each folder they went to synced once; then, for
    the copies that made it, the spool's names removed (never before their folder sync)."""
    for request in batch:
        _write(request)
    folders = {os.path.dirname(r.final) for r in batch if r.error is None}
    for folder in folders:
        try:
            fsync_dir(Path(folder))
        except OSError as exc:
            for request in batch:
                if request.error is None and os.path.dirname(request.final) == folder:
                    request.error = exc.strerror or str(exc)
    for request in batch:
        if request.error is None:
            _remove(request)


def reply(request: _Request) -> bytes:
    return encode_frame(
        {"n": request.n, "error": request.error, "unlink_error": request.unlink_error}
    )


def serve(sock: socket.socket) -> int:
    """Requests until the relay closes its end: 0; 2 on a frame that is not the protocol's (the
    relay logs the exit and delivers through worker threads)."""
    reader = _Reader(sock)
    while True:
        try:
            batch = reader.batch()
        except BadFrame:
            return 2
        if batch is None:
            return 0
        serve_batch(batch)
        sock.sendall(b"".join(reply(r) for r in batch))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m smtpconn.relay.agent FD (started by the relay)", file=sys.stderr)
        return 2
    # Its life is the socket's: a Ctrl-C or a hang-up meant for the relay's terminal, or the
    # service manager's SIGTERM to every process of the unit, must not cut a batch short. The
    # relay closes the socket when it stops; a relay killed outright closes it too.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    try:
        return serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the relay went away between a request and its reply: it redelivers
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
