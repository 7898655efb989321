"""The HTTP plumbing: a threading ``http.server`` that reads requests and sends :class:`~.wire.Answer`s.

Why care about plumbing in a test server: the hook's connection reuse, timeouts and body caps are
only exercised by a server that keeps connections alive, answers with exact ``Content-Length``,
never stalls on Nagle, cuts connections when stopped and survives clients that hang up. Every
response carries ``X-Request-Id: req_<n>``; the ``Authorization`` header is never logged, recorded
or echoed. What is answered is :mod:`.api`'s, :mod:`.faults`' and :mod:`.admin`'s business.
"""

from __future__ import annotations

import contextlib
import errno
import http
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_localleads.sandbox import admin, api
from airflow_provider_localleads.sandbox.faults import render_fault
from airflow_provider_localleads.sandbox.state import SandboxState
from airflow_provider_localleads.sandbox.wire import ADMIN_PREFIX, API_PREFIX, JSON_TYPE, error_body

if TYPE_CHECKING:
    from airflow_provider_localleads.sandbox.server import SandboxServer

__all__ = ["IDLE_TIMEOUT_SECONDS", "MAX_BODY_BYTES", "SandboxHTTPServer"]

log = logging.getLogger(__name__)

#: Largest request body read (admin JSON is tiny); bigger ones get 413 and the connection is closed.
MAX_BODY_BYTES: Final = 1 << 20
#: Idle keep-alive connections are dropped after this many seconds so handler threads do not pile up.
IDLE_TIMEOUT_SECONDS: Final = 60.0


class SandboxHTTPServer(ThreadingHTTPServer):
    """Serves one :class:`~.server.SandboxServer`; tracks connections so ``stop()`` can cut them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a benchmark with many concurrent clients must not see refused connects

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sandbox = sandbox
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take seconds on
        # a machine with slow DNS; a loopback test server has no use for it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Cut open keep-alive connections: after ``stop()`` a pooled client connection must not
        reach a handler thread that would still answer."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client that hangs up is normal, not an error.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError) or (
            isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF)
        ):
            log.debug("client %s went away: %s", client_address, exc)
        else:
            log.exception("unexpected error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the hook's requests.Session reuse is exercised
    server_version = "LocalLeadsSandbox/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed
    # ACK (~40 ms per request on Linux), which would make every keep-alive request look slow.
    disable_nagle_algorithm = True

    _request_id: str | None = None

    def parse_request(self) -> bool:
        self._request_id = None  # a protocol error on a kept-alive connection gets a fresh id, too
        return super().parse_request()

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header (and no trailing space)

    # -- plumbing ----------------------------------------------------------------------------------------

    @property
    def _srv(self) -> SandboxHTTPServer:
        server = self.server
        assert isinstance(server, SandboxHTTPServer)
        return server

    @property
    def _state(self) -> SandboxState:
        return self._srv.sandbox.state

    def setup(self) -> None:
        super().setup()
        self._srv.track(self.connection)

    def finish(self) -> None:
        self._srv.untrack(self.connection)
        with contextlib.suppress(OSError):  # the peer is gone; nothing left to flush
            super().finish()

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError) as exc:
            log.debug("client %s went away: %s", self.client_address, exc)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # Request line and status only: headers (and so the Authorization key) are never logged.
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON instead of the stdlib's HTML page for protocol-level errors (bad request line, unknown
        method, oversized headers), so even those carry ``X-Request-Id`` and a JSON body."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # The stdlib assumes 0.9 (no status line, no headers) until it has parsed a version; for a
            # garbled request line a status line and headers are far more useful to whoever sent it.
            self.request_version = "HTTP/1.0"
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._send(code, error_body(message or phrase))

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON_TYPE,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if self._request_id is None:
            self._request_id = self._state.next_request_id()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", self._request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _read_body(self) -> bytes | None:
        """Read (or drain) the request body so the keep-alive connection stays in sync. ``None`` means
        an error answer was already sent."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(411, error_body("chunked request bodies are not supported; send Content-Length"))
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            self.close_connection = True
            self._send(400, error_body("invalid Content-Length"))
            return None
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, error_body(f"request body larger than {MAX_BODY_BYTES} bytes"))
            return None
        return self.rfile.read(length) if length else b""

    # -- dispatch ----------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._request_id = None
        if self._srv.stopping.is_set():
            self.close_connection = True
            return
        self._request_id = self._state.next_request_id()
        split = urlsplit(self.path)
        path = split.path
        try:
            pairs = parse_qsl(split.query, keep_blank_values=True, max_num_fields=100)
        except ValueError:
            self.close_connection = True
            self._send(400, error_body("too many query parameters"))
            return
        query: dict[str, str] = {}
        repeated: set[str] = set()
        for name, value in pairs:
            if name in query:
                repeated.add(name)
            else:
                query[name] = value
        body = self._read_body()
        if body is None:
            return
        try:
            if path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/"):
                self._send(*admin.answer(self._state, self.command, path, query, body))
            else:
                self._api(path, api.Query(query, frozenset(repeated)))
        except (ConnectionError, TimeoutError):
            raise
        except Exception:
            log.exception("sandbox bug while answering %s %s", self.command, path)
            self.close_connection = True
            self._send(500, error_body("Internal sandbox error (see the server's log)"))

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch
    do_HEAD = _dispatch
    do_OPTIONS = _dispatch

    def _api(self, path: str, query: api.Query) -> None:
        """Faults first (like a gateway in front of the API), then the API; every answer is recorded."""
        state = self._state
        auth_error = api.check_auth(self.headers.get("Authorization"), self._srv.sandbox.api_key)
        fault = state.take_fault(path) if path.startswith(API_PREFIX) else None
        if fault is not None and fault.delay_seconds and self._srv.stopping.wait(fault.delay_seconds):
            self.close_connection = True  # stopped while "slow": hang up without an answer
            return
        if fault is not None and fault.kind != "slow":
            answer = render_fault(fault, lambda: api.success_body(state, path, query))
        else:
            answer = api.answer(state, self.command, path, query, auth_error)
        state.record_request(
            request_id=self._request_id or "",
            method=self.command,
            path=path,
            query=query.values,
            auth_valid=auth_error is None,
            status=answer.status,
            fault=None if fault is None else fault.kind,
        )
        self._send(*answer)
