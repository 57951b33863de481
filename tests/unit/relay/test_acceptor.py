"""The shared accept queue's gate (acceptor.py) on real local sockets, on asyncio's loop and on
uvloop: a full child leaves connections in the queue and takes them once a session ends; the
main takes them after OVERFLOW_DELAY (to refuse them) when it is full itself."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import uvloop

from smtpconn.relay import acceptor
from smtpconn.relay.acceptor import AcceptGate, SessionBoard, SharedListener, adopt, bind_shared


@dataclass
class Limits:
    sessions: int = 0
    max_sessions: int = 1


def _counting(limits: Limits, made: list[asyncio.BaseTransport]) -> Callable[[], asyncio.Protocol]:
    class Counted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            limits.sessions += 1
            made.append(transport)

    return Counted


async def _connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def _settle(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    return True


def _hang_up(clients: list[socket.socket], made: list[asyncio.BaseTransport]) -> None:
    for sock in clients:
        sock.close()
    for transport in made:
        transport.close()


def _close(
    listener: SharedListener,
    clients: list[socket.socket],
    made: list[asyncio.BaseTransport],
    boards: list[SessionBoard],
) -> None:
    listener.close()
    _hang_up(clients, made)
    for board in boards:
        board.close()


def _run(kind: str, main: Callable[[], object]) -> None:
    if kind == "uvloop":
        uvloop.run(main())  # type: ignore[arg-type]
    else:
        asyncio.run(main())  # type: ignore[arg-type]


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("kind", LOOPS)
def test_a_full_child_leaves_connections_queued_until_a_session_ends(kind: str) -> None:
    async def main() -> None:
        limits, made = Limits(), list[asyncio.BaseTransport]()
        sockets = await bind_shared("127.0.0.1", 0)
        gate = AcceptGate(limits, overflow=False)
        listener = SharedListener(sockets, _counting(limits, made), gate, name="inbound")
        port = listener.sockets[0].getsockname()[1]
        clients = [await _connect(port), await _connect(port)]
        await _settle(lambda: len(made) == 1)
        await asyncio.sleep(acceptor.OVERFLOW_DELAY * 2)
        assert len(made) == 1  # the second waits in the queue for another process
        limits.sessions -= 1
        gate.changed()
        await _settle(lambda: len(made) == 2)
        listener.close()
        await listener.wait_closed()
        assert not listener.is_serving()
        _hang_up(clients, made)

    _run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_full_main_takes_what_waits_after_the_overflow_delay(kind: str) -> None:
    async def main() -> None:
        limits, made = Limits(), list[asyncio.BaseTransport]()
        sockets = await bind_shared("127.0.0.1", 0)
        gate = AcceptGate(limits, overflow=True)
        listener = SharedListener(sockets, _counting(limits, made), gate, name="inbound")
        port = listener.sockets[0].getsockname()[1]
        clients = [await _connect(port) for _ in range(3)]
        await _settle(lambda: len(made) == 3)  # the 2nd and 3rd: for the tracker to refuse
        listener.close()
        _hang_up(clients, made)

    _run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_a_child_accepts_on_the_descriptors_the_main_passed(kind: str) -> None:
    """Two listeners on one socket (as main and child in two processes): both take
    connections, one each while each has room for one."""

    async def main() -> None:
        sockets = await bind_shared("127.0.0.1", 0)
        twin = adopt([socket.dup(sockets[0].fileno())])
        (a, made_a), (b, made_b) = (
            (Limits(), list[asyncio.BaseTransport]()),
            (
                Limits(),
                list[asyncio.BaseTransport](),
            ),
        )
        first = SharedListener(
            sockets, _counting(a, made_a), AcceptGate(a, overflow=False), name="x"
        )
        second = SharedListener(twin, _counting(b, made_b), AcceptGate(b, overflow=False), name="x")
        port = twin[0].getsockname()[1]
        clients = [await _connect(port) for _ in range(2)]
        await _settle(lambda: len(made_a) == len(made_b) == 1)
        for listener in (first, second):
            listener.close()
        for sock in clients:
            sock.close()
        for transport in made_a + made_b:
            transport.close()

    _run(kind, main)


def test_the_board_shows_each_process_the_others_sessions() -> None:
    main = SessionBoard.create(3)
    child = SessionBoard(os.dup(main.fd), 3, 2)  # as a child maps the fd the main passed
    main.publish(4)
    child.publish(2)
    # Slot 1 (a child not started yet) is nobody's: it never counts as the least loaded. (It
    # held 0, and every other process deferred each connection to a child that was not there.)
    assert child.least_loaded(2)
    first = SessionBoard(main.fd, 3, 1)
    first.publish(1)
    assert child.least_loaded(2) is False and child.least_loaded(1)
    main.forget(1)  # its child exited (the supervisor tells the main)
    assert child.least_loaded(2) and child.least_loaded(3)
    assert not main.least_loaded(4) and main.least_loaded(2)
    child.close()
    main.close()


def test_a_child_takes_the_number_of_slots_from_the_main_s_board() -> None:
    main = SessionBoard.create(3)  # the main runs 3 processes
    joined = SessionBoard.join(os.dup(main.fd), 2)
    assert joined is not None and joined.slots == 3
    joined.close()
    # A child restarted after `processes` was lowered in the file: no slot, no crash.
    assert SessionBoard.join(main.fd, 5) is None
    main.close()


def test_a_gate_publishes_what_it_holds_and_prefers_the_least_loaded() -> None:
    board = SessionBoard.create(2)
    other = SessionBoard(os.dup(board.fd), 2, 1)
    limits = Limits(sessions=1, max_sessions=5)
    gate = AcceptGate(limits, overflow=False, board=board)
    other.publish(1)
    assert gate.preferred()
    gate.pending += 1
    gate.changed()
    assert not gate.preferred() and other.least_loaded(1)
    other.close()
    board.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_sessions_ending_all_the_time_do_not_put_off_a_deferred_connection(kind: str) -> None:
    # Another (present) process holds fewer sessions, so this one defers; sessions end and
    # start here every 5 ms while its load stays high. Each end used to re-arm the deferral,
    # and the waiting connection was taken only once the load fell below the other's.
    async def main() -> None:
        limits, made = Limits(sessions=40, max_sessions=100), list[asyncio.BaseTransport]()
        board = SessionBoard.create(2)
        other = SessionBoard(os.dup(board.fd), 2, 1)
        other.publish(0)  # a child that holds nothing and takes nothing (hung)
        sockets = await bind_shared("127.0.0.1", 0)
        gate = AcceptGate(limits, overflow=True, board=board)
        listener = SharedListener(sockets, _counting(limits, made), gate, name="inbound")
        port = listener.sockets[0].getsockname()[1]
        client = await _connect(port)

        async def churn() -> None:
            while True:
                await asyncio.sleep(0.005)
                gate.changed()  # one ended, another began: the load stays where it is

        churning = asyncio.ensure_future(churn())
        try:
            await _settle(lambda: len(made) == 1, timeout=2.0)
        finally:
            churning.cancel()
            _close(listener, [client], made, [other, board])

    _run(kind, main)


def test_tls_handshakes_under_way_weigh_in_the_split_but_never_fill_a_process() -> None:
    # Silent clients on the implicit-TLS port hold a handshake for up to its timeout: counted
    # as full, a few of them (from one address) shut a child's listener for that long.
    board = SessionBoard.create(2)
    limits = Limits(sessions=0, max_sessions=2)
    gate = AcceptGate(limits, overflow=False, board=board)
    gate.handshakes = 5
    assert not gate.full() and gate.load() == 5
    gate.pending = 2  # plain connections being set up do count: they become sessions at once
    assert gate.full()
    board.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_a_deferred_connection_is_taken_once_the_other_process_becomes_the_busier(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deferral used to run its whole length even when the other process had meanwhile
    # taken more sessions (and deferred in turn): with many short sessions, connections sat in
    # the queue while both held back. DEFER is long here so only a look at the board can end it.
    monkeypatch.setattr(acceptor, "DEFER", 30.0)

    async def main() -> None:
        limits, made = Limits(sessions=3, max_sessions=100), list[asyncio.BaseTransport]()
        board = SessionBoard.create(2)
        other = SessionBoard(os.dup(board.fd), 2, 1)
        other.publish(1)  # the other process holds fewer: this one defers
        sockets = await bind_shared("127.0.0.1", 0)
        gate = AcceptGate(limits, overflow=False, board=board)
        listener = SharedListener(sockets, _counting(limits, made), gate, name="inbound")
        port = listener.sockets[0].getsockname()[1]
        client = await _connect(port)
        try:
            await asyncio.sleep(0.1)
            assert made == []  # left for the less busy process
            other.publish(5)  # it took others and is the busier one now
            await _settle(lambda: len(made) == 1, timeout=2.0)
        finally:
            _close(listener, [client], made, [other, board])

    _run(kind, main)
