"""Raw loopback HTTP servers and fixtures shared by the integration and reliability suites.

The sandbox is a well-behaved HTTP server with fault injection; some failures live below HTTP (a
body cut short of its Content-Length, a server that accepts and never answers, one that drips a
byte at a time, a certificate nobody trusts), need a second origin (redirects), or need to count
TCP connections. A :class:`RawServer` runs one ``behaviour(conn, server)`` per accepted connection
on a raw socket (optionally TLS-wrapped), so a test writes exactly the bytes it wants. Every thread
it starts is joined by :meth:`RawServer.stop`.

Both suites' conftests re-export the fixtures below (``set_conn``, ``make_hook``, ``raw_server``),
so they are defined once and keep each suite's own autouse fixtures beside them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_localleads.client.retry import RetryPolicy
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

#: Fast backoff for tests where the backoff itself is not the point (Retry-After still wins when sent).
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.02)

BALANCE_PATH = "/api/v1/credits/balance"
TRANSACTIONS_PATH = "/api/v1/credits/transactions"
#: The balance example of the API documentation (shared/api-docs/credits.txt), used by every suite.
BALANCE_DATA: dict[str, Any] = {
    "monthlyCredits": 100,
    "bonusCredits": 25,
    "usedCredits": 43,
    "availableCredits": 82,
    "resetDay": 1,
    "lastResetAt": "2026-05-01T00:00:00.000Z",
}
BALANCE_BODY = json.dumps({"success": True, "data": BALANCE_DATA}).encode()

#: Every thread a RawServer starts is named with this prefix, so a suite can tell if one outlived its test.
THREAD_PREFIX = "rel-raw"

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NETRC")


def clear_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must not go through a developer's proxy or netrc, nor carry their API key."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LOCALLEADS_API_KEY", raising=False)


@dataclass
class RawRequest:
    """One request head a RawServer read (header names lower-cased) and when (``time.monotonic()``)."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    at: float = 0.0


Behaviour = Callable[[socket.socket, "RawServer"], None]
#: ``set_conn(conn_id, host=..., password=..., **extra)`` (fixture below); returns the conn id.
ConnSetter = Callable[..., str]
#: ``make_hook(conn_id, **hook_kwargs)`` (fixture below).
HookFactory = Callable[..., LocalLeadsHook]
#: ``raw_server(behaviour, tls=None)`` (fixture below).
RawFactory = Callable[..., "RawServer"]


class RawServer:
    """A threaded TCP (or TLS) server on 127.0.0.1 handing each connection to ``behaviour``."""

    def __init__(self, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed_by_peer = 0
        self.peer_closed = threading.Event()
        self.requests: list[RawRequest] = []
        self._tls = tls
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{THREAD_PREFIX}:{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self._conns.append(conn)
            thread = threading.Thread(
                target=self._run, args=(conn,), name=f"{THREAD_PREFIX}-conn:{self.port}", daemon=True
            )
            with self.lock:
                self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn.settimeout(2)
                try:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    return  # the client refused our certificate: that is the test
            conn.settimeout(0.05)
            self.behaviour(conn, self)
        except OSError:
            pass  # the client hung up, or stop() cut the connection
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        """Stop accepting, cut every connection and join every thread, so none outlives its test."""
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

    # -- helpers for behaviours ------------------------------------------------------------------------

    def read_request(self, conn: socket.socket) -> RawRequest | None:
        """Read one request head (no request bodies are expected); None when the peer closed or we stop.

        A peer close is counted (``closed_by_peer``, ``peer_closed``): tests use it to see that a hook
        really hung up its connection.
        """
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if self.stopping.is_set():
                return None
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            if not chunk:
                with self.lock:
                    self.closed_by_peer += 1
                self.peer_closed.set()
                return None
            buffer += chunk
        head = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        request = RawRequest(method, target, headers, time.monotonic())
        with self.lock:
            self.requests.append(request)
        return request

    def wait_forever(self) -> None:
        """Hold the connection open without answering until the server stops."""
        self.stopping.wait()

    def pause(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the server is stopping (so a behaviour can bail out)."""
        return self.stopping.wait(seconds)

    def drip(self, conn: socket.socket, data: bytes, every: float) -> None:
        """Send ``data`` one byte per ``every`` seconds (until stopped): a server that is slow, not dead."""
        for byte in data:
            if self.pause(every):
                return
            conn.sendall(bytes([byte]))


def response_bytes(
    status: int = 200,
    body: bytes = BALANCE_BODY,
    *,
    reason: str = "OK",
    headers: dict[str, str] | None = None,
    content_length: int | None = None,
    content_type: str = "application/json",
) -> bytes:
    """A raw HTTP/1.1 response; ``content_length`` may lie, and ``-1`` leaves the header out."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    if content_length != -1:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer_every_request(payload: bytes | Callable[[RawRequest], bytes]) -> Behaviour:
    """Keep-alive: answer every request on the connection with ``payload`` (or ``payload(request)``)."""

    def behaviour(conn: socket.socket, server: RawServer) -> None:
        while (request := server.read_request(conn)) is not None:
            conn.sendall(payload(request) if callable(payload) else payload)

    return behaviour


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connection refused, fast."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------- fixtures
# Each suite's conftest.py imports these (pytest finds fixtures imported into a conftest). Their
# functions carry a ``_fixture`` suffix so that fixtures there taking e.g. ``set_conn`` as a parameter
# do not shadow an imported name (ruff F811).


@pytest.fixture(name="set_conn")
def set_conn_fixture(monkeypatch: pytest.MonkeyPatch) -> ConnSetter:
    """``set_conn(conn_id, host=..., password=..., **extra)``: an Airflow connection via env var.

    ``host`` and ``password`` may be None to leave them out, for tests of a missing host or key.
    """

    def setter(conn_id: str, host: str | None = None, password: str | None = None, **extra: Any) -> str:
        conn: dict[str, Any] = {"conn_type": "localleads"}
        if host is not None:
            conn["host"] = host
        if password is not None:
            conn["password"] = password
        if extra:
            conn["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return setter


@pytest.fixture(name="make_hook")
def make_hook_fixture() -> Iterator[HookFactory]:
    """``make_hook(conn_id, **hook_kwargs)``: the fast retry policy unless given; every hook closed afterwards."""
    hooks: list[LocalLeadsHook] = []

    def factory(conn_id: str, **kwargs: Any) -> LocalLeadsHook:
        kwargs.setdefault("retry_policy", FAST)
        hook = LocalLeadsHook(conn_id, **kwargs)
        hooks.append(hook)
        return hook

    yield factory
    for hook in hooks:
        hook.close()


@pytest.fixture(name="raw_server")
def raw_server_fixture() -> Iterator[RawFactory]:
    """``raw_server(behaviour, tls=None)``: a started RawServer, stopped (threads joined) after the test."""
    servers: list[RawServer] = []

    def factory(behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(behaviour, tls=tls)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
