"""Loopback servers and probes for the reliability tests.

:class:`RawServer` runs ``behaviour(conn, server)`` for each accepted TCP connection (optionally
TLS-wrapped with a throw-away self-signed certificate), so a test can misbehave below HTTP: never
answer, drip bytes, lie about Content-Length, hang up mid-body, stream forever. Every thread it
starts is joined by :meth:`RawServer.stop`.

The probes look at what a failure may leave behind: connections checked out of urllib3's or
httpx's pools, armed attempt deadlines (and watchdog threads), open file descriptors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_localleads._deadline import WATCHDOG_THREAD_NAME, armed_deadlines
from airflow_provider_localleads._retry import RetryPolicy
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance

#: Fast backoff for tests where the backoff itself is not the point (Retry-After still wins).
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.02)

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
class Seen:
    """One request head a RawServer read (header names lower-cased) and when."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    at: float = 0.0


Behaviour = Callable[[socket.socket, "RawServer"], None]
#: ``set_conn(conn_id, host=..., password=..., **extra)`` (fixture in conftest.py); returns the conn id.
ConnSetter = Callable[..., str]
#: ``raw_server(behaviour, tls=None)`` (fixture in conftest.py).
RawFactory = Callable[..., "RawServer"]
#: ``make_hook(conn_id, **hook_kwargs)`` (fixture in conftest.py).
HookFactory = Callable[..., LocalLeadsHook]


class RawServer:
    """A threaded TCP (or TLS) server on 127.0.0.1 handing each connection to ``behaviour``."""

    def __init__(self, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.accepted = 0
        self.seen: list[Seen] = []
        self._tls = tls
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"rel-raw:{self.port}", daemon=True)
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
            thread = threading.Thread(target=self._run, args=(conn,), name=f"rel-raw-conn:{self.port}", daemon=True)
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

    def read_request(self, conn: socket.socket) -> Seen | None:
        """Read one request head; None when the peer closed or the server is stopping."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if self.stopping.is_set():
                return None
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            if not chunk:
                return None
            buffer += chunk
        head = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        seen = Seen(method, target, headers, time.monotonic())
        with self.lock:
            self.seen.append(seen)
        return seen

    def pause(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the server is stopping."""
        return self.stopping.wait(seconds)

    def drip(self, conn: socket.socket, data: bytes, every: float) -> None:
        """Send ``data`` one byte per ``every`` seconds (until stopped)."""
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
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    if content_length != -1:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def answer_every_request(payload: bytes | Callable[[Seen], bytes]) -> Behaviour:
    """Keep-alive: answer every request on the connection with ``payload`` (or ``payload(request)``)."""

    def behaviour(conn: socket.socket, server: RawServer) -> None:
        while (seen := server.read_request(conn)) is not None:
            conn.sendall(payload(seen) if callable(payload) else payload)

    return behaviour


def self_signed_server_context(cert_out: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate for 127.0.0.1.

    Untrusted unless the test trusts it: ``cert_out`` receives the certificate (PEM) to name as a CA bundle.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localleads-reliability-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
    if cert_out is not None:
        with open(cert_out, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    return context


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(hook: LocalLeadsHook, mode: str) -> CreditBalance:
    """``get_balance`` (``mode="sync"``) or ``aget_balance`` in a fresh event loop (``"async"``)."""
    if mode == "sync":
        return hook.get_balance()
    import asyncio

    return asyncio.run(hook.aget_balance())


# -------------------------------------------------------------------------------------------- probes


def sync_pools(hook: LocalLeadsHook) -> list[Any]:
    """Every urllib3 connection pool the hook's session has created (direct and via proxies)."""
    pools: list[Any] = []
    session = hook.__dict__.get("session")
    if session is None:
        return pools
    for adapter in session.adapters.values():
        managers = [adapter.poolmanager, *adapter.proxy_manager.values()]
        for manager in managers:
            pools.extend(manager.pools._container.values())
    return pools


def sync_checked_out(hook: LocalLeadsHook) -> int:
    """Connections taken out of the hook's urllib3 pools and not given back.

    A pool's LIFO queue starts with ``maxsize`` slots (``None`` or an idle connection); taking a
    connection removes a slot until it is put back, so a pool at rest has ``qsize() == maxsize``.
    """
    return sum(pool.pool.maxsize - pool.pool.qsize() for pool in sync_pools(hook))


def async_pool_busy(client: Any) -> tuple[int, int]:
    """(requests in flight, connections neither idle nor closed) in an httpx client's connection pool."""
    pool = client._transport._pool
    active = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    return len(pool._requests), len(active)


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WATCHDOG_THREAD_NAME]


def assert_no_armed_deadline() -> None:
    """Every attempt disarmed its deadline, and the process has at most its one watchdog thread."""
    assert armed_deadlines() == 0, "an attempt deadline is still armed after its attempt ended"
    assert len(watchdog_threads()) <= 1, [t.name for t in watchdog_threads()]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@contextlib.contextmanager
def no_leftovers(slack_fds: int = 0) -> Iterator[None]:
    """Assert that the block leaves no armed deadline and no extra open file descriptor behind.

    Hooks and clients used in the block must be closed inside it; servers stopped outside it.
    """
    before = open_fds()
    yield
    deadline = time.monotonic() + 2
    assert_no_armed_deadline()
    leaked = open_fds() - before
    # Descriptors the block opened may still be closing in another thread (a server's handler).
    while len(leaked) > slack_fds and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = open_fds() - before
    assert len(leaked) <= slack_fds, f"file descriptors left open: {sorted(leaked)}"
