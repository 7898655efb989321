"""Purpose-built loopback servers for the integration tests, for what the sandbox cannot do.

The sandbox is a well-behaved HTTP server with fault injection; some failures live below HTTP (a
body cut short of its Content-Length, a server that accepts and never answers, one that drips a
byte at a time) or need a second origin (redirects), or need to count TCP connections. A
:class:`RawServer` runs one ``behaviour(conn, server)`` per accepted connection on a raw socket, so
a test writes exactly the bytes it wants. Every thread stops on :meth:`RawServer.stop`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_localleads._retry import RetryPolicy
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

#: Fast backoff for tests where backoff is not the point (Retry-After still wins when sent).
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)

#: ``set_conn(conn_id, host=..., password=..., **extra)`` (fixture in conftest.py); returns the conn id.
ConnSetter = Callable[..., str]
#: ``make_hook(conn_id, **hook_kwargs)`` (fixture in conftest.py).
HookFactory = Callable[..., LocalLeadsHook]

BALANCE_PATH = "/api/v1/credits/balance"
TRANSACTIONS_PATH = "/api/v1/credits/transactions"

BALANCE_DATA: dict[str, Any] = {
    "monthlyCredits": 100,
    "bonusCredits": 25,
    "usedCredits": 43,
    "availableCredits": 82,
    "resetDay": 1,
    "lastResetAt": "2026-05-01T00:00:00.000Z",
}
BALANCE_BODY = json.dumps({"success": True, "data": BALANCE_DATA}).encode()


@dataclass
class Recorded:
    """One request a RawServer read: request line parts and headers (names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)


Behaviour = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """A threaded TCP server on 127.0.0.1 that hands each connection to ``behaviour``."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed_by_peer = 0
        self.peer_closed = threading.Event()
        self.requests: list[Recorded] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"raw-server:{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.05)
            with self.lock:
                self.accepted += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self.lock:
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.behaviour(conn, self)
        except OSError:
            pass  # the client hung up, or stop() cut the connection
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(5)
        with self.lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
            assert not thread.is_alive(), "a RawServer behaviour did not stop"

    # -- helpers for behaviours ----------------------------------------------------------------------

    def read_request(self, conn: socket.socket) -> Recorded | None:
        """Read one request head (no request bodies are expected); None when the peer closed."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if self.stopping.is_set():
                return None
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                with self.lock:
                    self.closed_by_peer += 1
                self.peer_closed.set()
                return None
            buffer += chunk
        head = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        recorded = Recorded(method, target, headers)
        with self.lock:
            self.requests.append(recorded)
        return recorded

    def wait_forever(self) -> None:
        """Hold the connection open without answering until the server stops."""
        self.stopping.wait()


def response_bytes(
    status: int = 200,
    body: bytes = BALANCE_BODY,
    *,
    reason: str = "OK",
    headers: dict[str, str] | None = None,
    content_length: int | None = None,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json"]
    lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def keep_alive_json(body: bytes = BALANCE_BODY) -> Behaviour:
    """Answer every request on the connection with 200 ``body`` (HTTP/1.1 keep-alive)."""

    def behaviour(conn: socket.socket, server: RawServer) -> None:
        while server.read_request(conn) is not None:
            conn.sendall(response_bytes(body=body))

    return behaviour


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
