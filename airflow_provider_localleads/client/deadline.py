"""A hard wall-clock bound for each synchronous HTTP attempt, and the requests adapter that obeys it.

Socket timeouts bound each ``recv``, not the attempt: a server sending a byte every few seconds
keeps a read alive forever, in the TLS handshake, the status line, the headers or the body. While an
attempt runs inside :class:`AttemptDeadline`, the pool's connections (:class:`WatchedAdapter`)
register each socket they use; when the budget runs out those sockets are shut down, so the blocked
read returns at once and the attempt fails as a timeout.

One daemon thread per process (:class:`_Watchdog`) keeps every armed deadline in a heap and sleeps
until the earliest one. Starting a timer thread per attempt cost more than the request itself on
loopback (bench/hook_overhead.py); arming a deadline here is a heap push under a lock. After a
``fork`` (Celery's prefork pool, the LocalExecutor) the child starts with an empty watchdog of its
own: the parent's thread does not exist there.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: The name of the watchdog thread (one per process, started on the first attempt).
WATCHDOG_THREAD_NAME = "localleads-attempt-deadlines"


class _Watchdog:
    """Expires armed :class:`AttemptDeadline` objects when their time comes, from one thread.

    Deadlines that finish in time are not removed from the heap (that would cost a search); they are
    dropped lazily when they reach the top, by the thread or by the next :meth:`arm`. Attempts end in
    roughly the order they started, so the heap stays about as large as the attempts in flight.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, AttemptDeadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, when: float, deadline: AttemptDeadline) -> None:
        """Expire ``deadline`` at ``when`` (``time.monotonic()`` clock) unless it has finished by then."""
        with self._cond:
            self._drop_finished()
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=WATCHDOG_THREAD_NAME, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:  # a new earliest deadline: the thread sleeps too long
                self._cond.notify()

    def armed(self) -> int:
        """How many deadlines are armed and not finished (0 when no attempt is running)."""
        with self._cond:
            return sum(1 for _, _, deadline in self._heap if not deadline.finished)

    def _drop_finished(self) -> None:
        heap = self._heap
        while heap and heap[0][2].finished:
            heapq.heappop(heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._drop_finished()
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(delay)
            due.expire()  # outside the lock: it shuts sockets down and takes the deadline's own lock


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    # A forked child inherits the heap and maybe a held lock, but not the thread: start it afresh.
    os.register_at_fork(after_in_child=_WATCHDOG._reset)


def armed_deadlines() -> int:
    """How many attempt deadlines are armed right now in this process (for tests and diagnostics)."""
    return _WATCHDOG.armed()


class AttemptDeadline:
    """A hard wall-clock bound for one synchronous attempt (a context manager).

    Registration keeps a duplicate of each socket's file descriptor (``shutdown`` acts on the
    connection, whichever descriptor it is called through, and TLS-wrapping the original detaches
    it): the duplicate is ours, closed when the attempt ends, so the watchdog can never touch a
    descriptor the process has reused for something else. A connection shut down this way is closed
    by urllib3 and replaced on the next request.

    Leaves nothing behind: ``__exit__`` disarms the deadline and closes every duplicate.
    """

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self._seconds = max(seconds, 0.0)
        self._lock = threading.Lock()
        self._twins: list[socket.socket] = []
        self._finished = False
        self._previous: AttemptDeadline | None = None
        #: True once the budget ran out and the attempt's sockets were shut down.
        self.expired = False

    @property
    def finished(self) -> bool:
        """True once the attempt has ended (the watchdog then forgets it)."""
        return self._finished

    @classmethod
    def watch_current(cls, sock: socket.socket | None) -> None:
        """Called by the connections: put ``sock`` under the running attempt's deadline (if any)."""
        deadline: AttemptDeadline | None = getattr(cls._current, "deadline", None)
        if deadline is not None and sock is not None:
            deadline.watch(sock)

    def watch(self, sock: socket.socket) -> None:
        fromfd = getattr(socket, "fromfd", None)
        if fromfd is None:  # a platform without it: the per-read timeouts still apply
            return
        try:
            twin = fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):
            return  # already closed: nothing left to interrupt
        with self._lock:
            if not self._finished and not self.expired:
                self._twins.append(twin)
                return
            expired = self.expired and not self._finished
        if expired:
            _shutdown(twin)
        twin.close()

    def expire(self) -> None:
        """The budget ran out: shut down every socket the attempt registered (the watchdog calls this)."""
        with self._lock:
            if self._finished:
                return
            self.expired = True
            for twin in self._twins:
                _shutdown(twin)

    def __enter__(self) -> AttemptDeadline:
        self._previous = getattr(self._current, "deadline", None)
        self._current.deadline = self
        _WATCHDOG.arm(time.monotonic() + self._seconds, self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._current.deadline = self._previous
        with self._lock:
            self._finished = True
            twins, self._twins = self._twins, []
        for twin in twins:
            twin.close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    """urllib3's connection, registering its socket with the running attempt's deadline."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        AttemptDeadline.watch_current(sock)  # before any TLS handshake: a dripping handshake is bounded too
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        AttemptDeadline.watch_current(self.sock)  # a pooled connection reused by this attempt
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        AttemptDeadline.watch_current(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        AttemptDeadline.watch_current(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": _WatchedHTTPConnectionPool,
    "https": _WatchedHTTPSConnectionPool,
}


class WatchedAdapter(HTTPAdapter):
    """requests' adapter, with pools whose connections obey :class:`AttemptDeadline` (also via an HTTP proxy).

    requests' own retries stay off (``max_retries=0``): the provider's retry policy is the only one.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are their own classes: per-read timeouts only
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager
