"""The per-process watchdog behind AttemptDeadline: on socket pairs, no HTTP involved.

Each test blocks a real ``recv`` on a socket registered with a deadline; the deadline "works" when
that read returns because the watchdog shut the socket down. Every blocking read also has a long
socket timeout, so a broken watchdog fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_localleads.client.deadline import WATCHDOG_THREAD_NAME, AttemptDeadline, armed_deadlines

#: Far longer than any deadline below: reaching it means the watchdog did not act.
SAFETY_TIMEOUT = 20.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(SAFETY_TIMEOUT)
    yield ours, theirs
    ours.close()
    theirs.close()


def _blocked_read(sock: socket.socket, seconds: float) -> tuple[bytes, AttemptDeadline]:
    """recv() under a deadline of ``seconds``; returns what it read (b"" once shut down)."""
    with AttemptDeadline(seconds) as deadline:
        AttemptDeadline.watch_current(sock)
        try:
            data = sock.recv(10)
        except TimeoutError:
            pytest.fail(f"the {seconds}s deadline did not interrupt the read within {SAFETY_TIMEOUT}s")
    return data, deadline


def test_an_expired_deadline_interrupts_a_blocked_read(pair: tuple[socket.socket, socket.socket]) -> None:
    data, deadline = _blocked_read(pair[0], 0.1)
    assert data == b""
    assert deadline.expired
    assert deadline.finished
    assert armed_deadlines() == 0


def test_a_deadline_armed_after_a_longer_one_still_fires_first(pair: tuple[socket.socket, socket.socket]) -> None:
    """The thread sleeps until the earliest deadline: a new, earlier one must wake it."""
    long_pair = socket.socketpair()
    long_pair[0].settimeout(SAFETY_TIMEOUT)
    started = threading.Event()
    outcome: list[bool] = []

    def long_attempt() -> None:
        with AttemptDeadline(3600) as deadline:
            AttemptDeadline.watch_current(long_pair[0])
            started.set()
            long_pair[0].recv(10)  # ends when the test sends a byte
        outcome.append(deadline.expired)

    thread = threading.Thread(target=long_attempt, name="localleads-test-long-attempt")
    thread.start()
    try:
        assert started.wait(SAFETY_TIMEOUT)
        data, deadline = _blocked_read(pair[0], 0.1)
        assert (data, deadline.expired) == (b"", True)
        assert armed_deadlines() == 1  # the long attempt is still running, still armed
    finally:
        long_pair[1].sendall(b"x")
        thread.join(SAFETY_TIMEOUT)
        long_pair[0].close()
        long_pair[1].close()
    assert outcome == [False]
    assert armed_deadlines() == 0


def test_a_finished_attempt_is_never_expired_later(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    with AttemptDeadline(0.05) as deadline:
        AttemptDeadline.watch_current(ours)
    assert armed_deadlines() == 0
    # Another attempt's deadline passing makes the watchdog pop the finished one from its heap.
    spare = socket.socketpair()
    try:
        spare[0].settimeout(SAFETY_TIMEOUT)
        _blocked_read(spare[0], 0.2)
    finally:
        spare[0].close()
        spare[1].close()
    assert deadline.expired is False
    theirs.sendall(b"still open")
    assert ours.recv(10) == b"still open"


def test_a_socket_registered_after_expiry_is_shut_down_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    with AttemptDeadline(0.0) as deadline:
        while not deadline.expired:
            time.sleep(0.01)
        AttemptDeadline.watch_current(pair[0])
        assert pair[0].recv(10) == b""


def test_one_thread_serves_concurrent_attempts() -> None:
    pairs = [socket.socketpair() for _ in range(8)]
    results: list[bytes] = []
    lock = threading.Lock()

    def attempt(sock: socket.socket) -> None:
        sock.settimeout(SAFETY_TIMEOUT)
        data, _ = _blocked_read(sock, 0.1)
        with lock:
            results.append(data)

    threads = [threading.Thread(target=attempt, args=(p[0],), name=f"localleads-test-{i}") for i, p in enumerate(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SAFETY_TIMEOUT)
    for a, b in pairs:
        a.close()
        b.close()
    assert results == [b""] * 8
    assert [t.name for t in threading.enumerate()].count(WATCHDOG_THREAD_NAME) == 1
    assert armed_deadlines() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_a_forked_child_gets_its_own_watchdog(pair: tuple[socket.socket, socket.socket]) -> None:
    """Celery's prefork pool forks after the parent has used the hook: the child must still be bounded."""
    _blocked_read(pair[0], 0.01)  # the parent's watchdog thread exists now
    child_pair = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the deadline interrupted the read
        code = 3
        try:
            child_pair[0].settimeout(SAFETY_TIMEOUT)
            with AttemptDeadline(0.1) as deadline:
                AttemptDeadline.watch_current(child_pair[0])
                data = child_pair[0].recv(10)
            code = 0 if (data == b"" and deadline.expired) else 1
        except TimeoutError:
            code = 2
        finally:
            os._exit(code)
    child_pair[0].close()
    child_pair[1].close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "exit 1: read not interrupted; 2: watchdog never fired"
