"""A real HTTP server on loopback that speaks the LocalLeads Credits API, plus a client for its controls.

Why a real server and not a mocked ``requests`` call: the provider's hook, its retries, timeouts,
connection reuse and the async trigger all run unchanged against it, in this process (a pytest
fixture) or in another one (``python -m airflow_provider_localleads.sandbox`` next to a scheduler).

Standard library only (``http.server``), so it costs nothing to ship and nothing to import.

Wire contract, matching ``api-docs/credits.txt``:

* ``GET /api/v1/credits/balance`` and ``GET /api/v1/credits/transactions?limit=&offset=`` with
  ``Authorization: Bearer <key>``; JSON bodies ``{"success": true, "data": ...}``.
* Errors: ``401`` ``{"success": false, "error": {"code": "UNAUTHORIZED", "message": ...}}``, ``400``
  ``{"success": false, "error": "limit must be an integer between 1 and 100"}``, ``404``
  ``{"success": false, "error": "Not found"}``, ``405`` for a method other than ``GET``.
* Every response has ``Content-Type``, an exact ``Content-Length`` and ``X-Request-Id: req_<n>``.
* The ``Authorization`` header is never logged, recorded or echoed.

Controls live under ``/_sandbox/`` (no auth: the server refuses to listen beyond loopback unless told
to); :class:`SandboxClient` wraps them for code in another process, e.g. a DAG task that "spends"
credits the way a real search would.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import http
import ipaddress
import json
import logging
import socket
import socketserver
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from airflow_provider_localleads.sandbox.state import (
    API_PREFIX,
    BALANCE_PATH,
    MALFORMED_KINDS,
    TRANSACTIONS_PATH,
    Fault,
    FaultShortcuts,
    InsufficientCredits,
    RecordedRequest,
    SandboxState,
)

__all__ = ["DEFAULT_API_KEY", "SandboxClient", "SandboxError", "SandboxServer", "is_loopback_host"]

log = logging.getLogger(__name__)

DEFAULT_API_KEY: Final = "sandbox-key"
ADMIN_PREFIX: Final = "/_sandbox/"
API_PATHS: Final = frozenset({BALANCE_PATH, TRANSACTIONS_PATH})

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
LIMIT_ERROR: Final = f"limit must be an integer between 1 and {MAX_LIMIT}"
OFFSET_ERROR: Final = "offset must be an integer >= 0"

#: Largest request body read (admin JSON is tiny); bigger ones get 413 and the connection is closed.
MAX_BODY_BYTES: Final = 1 << 20
#: Idle keep-alive connections are dropped after this many seconds so handler threads do not pile up.
IDLE_TIMEOUT_SECONDS: Final = 60.0

JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"

_PROXY_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in - Corporate Proxy</title></head>"
    b"<body><h1>Authentication required</h1><p>Please sign in to continue browsing.</p></body></html>\n"
)


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked (not reachable, or an unexpected admin answer)."""


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``). Names other than ``localhost``
    count as remote: resolving them could point anywhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _error_body(error: str | Mapping[str, str]) -> bytes:
    return _json_bytes({"success": False, "error": error})


def _parse_bounded_int(raw: str | None, default: int, minimum: int, maximum: int | None) -> int | None:
    """Strict decimal digits only: ``"1.5"``, ``"1e1"``, ``" 5"``, ``""`` and ``"-1"`` are refused, so a
    client that sends something odd learns it from a 400 instead of getting a silent guess."""
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        return None
    return value


# ----------------------------------------------------------------------------------------------------------
# The HTTP server
# ----------------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
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
    def _srv(self) -> _HTTPServer:
        server = self.server
        assert isinstance(server, _HTTPServer)
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
        self._send(code, _error_body(message or phrase))

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
            self._send(411, _error_body("chunked request bodies are not supported; send Content-Length"))
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            self.close_connection = True
            self._send(400, _error_body("invalid Content-Length"))
            return None
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, _error_body(f"request body larger than {MAX_BODY_BYTES} bytes"))
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
            self._send(400, _error_body("too many query parameters"))
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
                self._admin(path, query, body)
            else:
                self._api(path, query, repeated)
        except (ConnectionError, TimeoutError):
            raise
        except Exception:
            log.exception("sandbox bug while answering %s %s", self.command, path)
            self.close_connection = True
            self._send(500, _error_body("Internal sandbox error (see the server's log)"))

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch
    do_HEAD = _dispatch
    do_OPTIONS = _dispatch

    # -- the API -----------------------------------------------------------------------------------------

    def _auth(self) -> str | None:
        """``None`` if the request carries the key, else the 401 message (which never quotes it)."""
        header = self.headers.get("Authorization")
        if header is None:
            return "Missing Authorization header; send 'Authorization: Bearer <API key>'"
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if not token or token != token.strip() or any(ch.isspace() for ch in token):
            return "Malformed Authorization header; expected 'Bearer <API key>'"
        expected = self._srv.sandbox.api_key.encode("latin-1")
        if not hmac.compare_digest(token.encode("latin-1", "replace"), expected):
            return "Invalid API key"
        return None

    def _api(self, path: str, query: dict[str, str], repeated: set[str]) -> None:
        auth_error = self._auth()
        fault = self._state.take_fault(path) if path.startswith(API_PREFIX) else None
        if fault is not None and fault.delay_seconds and self._srv.stopping.wait(fault.delay_seconds):
            self.close_connection = True  # stopped while "slow": hang up without an answer
            return
        if fault is not None and fault.kind != "slow":
            status, body, content_type, headers = self._fault_response(fault, path, query, repeated)
        else:
            status, body, content_type, headers = self._api_response(path, query, repeated, auth_error)
        self._state.record_request(
            request_id=self._request_id or "",
            method=self.command,
            path=path,
            query=query,
            auth_valid=auth_error is None,
            status=status,
            fault=None if fault is None else fault.kind,
        )
        self._send(status, body, content_type, headers)

    def _api_response(
        self, path: str, query: dict[str, str], repeated: set[str], auth_error: str | None
    ) -> tuple[int, bytes, str, dict[str, str]]:
        if path not in API_PATHS:
            return 404, _error_body("Not found"), JSON_TYPE, {}
        if self.command != "GET":
            return 405, _error_body(f"Method {self.command} not allowed"), JSON_TYPE, {"Allow": "GET"}
        if auth_error is not None:
            body = _error_body({"code": "UNAUTHORIZED", "message": auth_error})
            return 401, body, JSON_TYPE, {"WWW-Authenticate": 'Bearer realm="LocalLeads"'}
        if path == BALANCE_PATH:
            return 200, _json_bytes({"success": True, "data": self._state.balance()}), JSON_TYPE, {}
        limit = None if "limit" in repeated else _parse_bounded_int(query.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
        if limit is None:
            return 400, _error_body(LIMIT_ERROR), JSON_TYPE, {}
        offset = None if "offset" in repeated else _parse_bounded_int(query.get("offset"), 0, 0, None)
        if offset is None:
            return 400, _error_body(OFFSET_ERROR), JSON_TYPE, {}
        return 200, _json_bytes(self._page(limit, offset)), JSON_TYPE, {}

    def _page(self, limit: int, offset: int) -> dict[str, Any]:
        items, total = self._state.transactions_page(limit, offset)
        return {"success": True, "data": items, "meta": {"total": total, "limit": limit, "offset": offset}}

    def _success_payload(self, path: str, query: dict[str, str], repeated: set[str]) -> dict[str, Any]:
        """The answer a malformed fault distorts: the real page for the transactions path (with the
        request's paging when valid), the balance for anything else."""
        if path == TRANSACTIONS_PATH:
            limit = _parse_bounded_int(query.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
            offset = _parse_bounded_int(query.get("offset"), 0, 0, None) or 0
            if repeated & {"limit", "offset"}:
                limit, offset = DEFAULT_LIMIT, 0
            return self._page(limit, offset)
        return {"success": True, "data": self._state.balance()}

    def _fault_response(
        self, fault: Fault, path: str, query: dict[str, str], repeated: set[str]
    ) -> tuple[int, bytes, str, dict[str, str]]:
        kind = fault.kind
        if kind in ("error", "rate_limit"):
            status = fault.status or 503
            headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            if fault.body is not None:
                body = fault.body.encode("utf-8") if isinstance(fault.body, str) else fault.body
            elif kind == "rate_limit":
                body = _error_body({"code": "RATE_LIMITED", "message": "Too many requests; slow down"})
            else:
                body = _error_body(http.HTTPStatus(status).phrase)
            return status, body, fault.content_type or JSON_TYPE, headers
        assert kind in MALFORMED_KINDS
        if kind == "html":
            return 200, _PROXY_PAGE, HTML_TYPE, {}
        if kind == "empty":
            return 200, b"", JSON_TYPE, {}
        if kind == "not_json":
            return 200, b"oops", JSON_TYPE, {}
        if kind == "success_false_string":
            return 200, _error_body("Something went wrong"), JSON_TYPE, {}
        if kind == "success_false_object":
            return 200, _error_body({"code": "INTERNAL_ERROR", "message": "Something went wrong"}), JSON_TYPE, {}
        payload = self._success_payload(path, query, repeated)
        if kind == "truncated":
            full = _json_bytes(payload)
            return 200, full[: len(full) // 2], JSON_TYPE, {}
        if kind == "array":
            return 200, _json_bytes([payload]), JSON_TYPE, {}
        data, meta = payload["data"], payload.get("meta")
        if kind == "missing_field":
            if meta is not None:
                meta.pop("total")
            else:
                data.pop("availableCredits")
        elif meta is not None:  # mistyped_field
            meta["total"] = str(meta["total"])
        else:
            data["availableCredits"] = str(data["availableCredits"])
        return 200, _json_bytes(payload), JSON_TYPE, {}

    # -- admin -------------------------------------------------------------------------------------------

    def _admin(self, path: str, query: dict[str, str], raw_body: bytes) -> None:
        route = path[len(ADMIN_PREFIX) :] if path.startswith(ADMIN_PREFIX) else ""
        if route.startswith("transactions/") and route != "transactions/":
            methods = _ADMIN_TRANSACTION_ROUTES
        else:
            methods = _ADMIN_ROUTES.get(route, {})
        if not methods:
            self._send(404, _error_body(f"Not found; admin endpoints are under {ADMIN_PREFIX}"))
            return
        handler = methods.get(self.command)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            self._send(405, _error_body(f"Method {self.command} not allowed"), headers={"Allow": allowed})
            return
        try:
            body = json.loads(raw_body) if raw_body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send(400, _error_body(f"request body is not valid JSON: {exc}"))
            return
        if not isinstance(body, dict):
            self._send(400, _error_body("request body must be a JSON object"))
            return
        try:
            status, data = handler(self, _AdminRequest(route, query, body))
        except InsufficientCredits as exc:
            self._send(409, _error_body(str(exc)))
            return
        except KeyError as exc:
            self._send(404, _error_body(str(exc.args[0]) if exc.args else "Not found"))
            return
        except (TypeError, ValueError) as exc:
            self._send(400, _error_body(str(exc)))
            return
        payload: dict[str, Any] = {"success": True, "data": data}
        if route == "requests" and self.command == "GET":
            payload["meta"] = {"total": self._state.request_count(query.get("path"))}
        self._send(status, _json_bytes(payload))


@dataclass(frozen=True)
class _AdminRequest:
    route: str
    query: dict[str, str]
    body: dict[str, Any]


def _fields(body: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
    """Refuse unknown keys (a typo like ``ammount`` must not be silently ignored) and missing ones."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    for name in required:
        if body.get(name) is None:
            raise ValueError(f"{name} is required")


def _with_balance(h: _Handler, transaction: dict[str, Any]) -> dict[str, Any]:
    return {"transaction": transaction, "balance": h._state.balance()}


_AdminResult = tuple[int, object]


def _admin_state(h: _Handler, r: _AdminRequest) -> _AdminResult:
    return 200, h._state.snapshot()


def _admin_get_balance(h: _Handler, r: _AdminRequest) -> _AdminResult:
    return 200, h._state.balance()


def _admin_balance(h: _Handler, r: _AdminRequest) -> _AdminResult:
    _fields(r.body, ("monthly", "bonus", "used", "reset_day", "last_reset_at"))
    return 200, h._state.set_balance(**r.body)


def _admin_spend(h: _Handler, r: _AdminRequest) -> _AdminResult:
    _fields(r.body, ("amount", "description"), required=("amount",))
    return 200, _with_balance(h, h._state.spend(**r.body))


def _admin_top_up(h: _Handler, r: _AdminRequest) -> _AdminResult:
    _fields(r.body, ("amount", "description"), required=("amount",))
    return 200, _with_balance(h, h._state.top_up(**r.body))


def _admin_reset_month(h: _Handler, r: _AdminRequest) -> _AdminResult:
    _fields(r.body, ("at",))
    return 200, _with_balance(h, h._state.reset_month(r.body.get("at")))


def _admin_add_fault(h: _Handler, r: _AdminRequest) -> _AdminResult:
    _fields(r.body, ("kind", "status", "retry_after", "delay", "times", "path", "body", "content_type"))
    fault = Fault.from_json(r.body)
    times = r.body.get("times", 1)
    h._state.inject(fault, times)
    return 201, {**fault.to_json(), "times": times}


def _admin_list_faults(h: _Handler, r: _AdminRequest) -> _AdminResult:
    return 200, h._state.pending_faults()


def _admin_clear_faults(h: _Handler, r: _AdminRequest) -> _AdminResult:
    return 200, {"cleared": h._state.clear_faults()}


def _admin_requests(h: _Handler, r: _AdminRequest) -> _AdminResult:
    path = r.query.get("path")
    return 200, [rec.to_json() for rec in h._state.requests if path is None or rec.path == path]


def _admin_clear_requests(h: _Handler, r: _AdminRequest) -> _AdminResult:
    h._state.reset_request_log()
    return 200, {"cleared": True}


def _admin_add_transactions(h: _Handler, r: _AdminRequest) -> _AdminResult:
    _fields(r.body, ("count", "type", "amount", "description", "created_at"))
    return 201, h._state.insert_transactions(**r.body)


def _admin_delete_transaction(h: _Handler, r: _AdminRequest) -> _AdminResult:
    return 200, h._state.delete_transaction(unquote(r.route[len("transactions/") :]))


_AdminFunc = Callable[[_Handler, _AdminRequest], _AdminResult]
_ADMIN_ROUTES: Final[dict[str, dict[str, _AdminFunc]]] = {
    "state": {"GET": _admin_state},
    "balance": {"GET": _admin_get_balance, "POST": _admin_balance},
    "spend": {"POST": _admin_spend},
    "top-up": {"POST": _admin_top_up},
    "reset-month": {"POST": _admin_reset_month},
    "faults": {"GET": _admin_list_faults, "POST": _admin_add_fault, "DELETE": _admin_clear_faults},
    "requests": {"GET": _admin_requests, "DELETE": _admin_clear_requests},
    "transactions": {"POST": _admin_add_transactions},
}
_ADMIN_TRANSACTION_ROUTES: Final[dict[str, _AdminFunc]] = {"DELETE": _admin_delete_transaction}


# ----------------------------------------------------------------------------------------------------------
# Public objects
# ----------------------------------------------------------------------------------------------------------


class SandboxServer(FaultShortcuts):
    """The LocalLeads Credits API on loopback, served from a daemon thread.

    >>> with SandboxServer() as sandbox:                     # port 0: any free port
    ...     sandbox.set_balance(used=120)
    ...     sandbox.rate_limit_next(retry_after="2")
    ...     os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"] = sandbox.connection_json()

    Controls (``set_balance``, ``spend``, ``top_up``, ``reset_month``, the faults, the request log) are
    the :class:`SandboxState`'s, repeated here so a test needs one object. ``stop()`` returns promptly
    even while a slow fault is sleeping. A stopped server may be started again: it rebinds the same
    port, which simulates an outage and recovery.

    The admin endpoints have no authentication, so a host other than loopback is refused unless
    ``allow_remote=True`` (for a container or VM whose port is forwarded; the API key still guards
    the API).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        state: SandboxState | None = None,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"host {host!r} is not a loopback address; the sandbox's admin endpoints are "
                "unauthenticated, so pass allow_remote=True only if the network is trusted"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer between 0 and 65535, got {port!r}")
        if (
            not isinstance(api_key, str)
            or not api_key
            or not api_key.isascii()
            or not api_key.isprintable()
            or any(ch.isspace() for ch in api_key)
        ):
            raise ValueError("api_key must be a non-empty string of visible ASCII characters")
        self._host = host.strip("[]")
        self._port = port
        self._api_key = api_key
        self.state = state if state is not None else SandboxState()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns ``self``. Raises ``OSError`` if the port is taken."""
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("the sandbox is already running")
            httpd = _HTTPServer((self._host, self._port), self)
            self._port = httpd.server_port  # port 0 -> the real one; a restart reuses it
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},  # how long shutdown() may wait for the loop
                name=f"localleads-sandbox:{self._port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        log.debug("LocalLeads sandbox listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the listening socket and cut open connections; idempotent.

        Slow faults wait on the stop event, so a request sleeping in one is abandoned at once (its
        client sees the connection close) instead of holding ``stop()`` for the whole delay.
        """
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout)
        log.debug("LocalLeads sandbox on port %s stopped", self._port)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port else f"{self._host}:<not started>"
        return f"<SandboxServer {where} {'running' if self.running else 'stopped'}>"

    # -- addressing --------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known after the first ``start()`` when constructed with port 0)."""
        if not self._port:
            raise RuntimeError("the sandbox has no port yet; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``: what goes in the connection's ``host``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self._api_key

    def connection_json(self, conn_type: str = "localleads", extra: Mapping[str, Any] | None = None) -> str:
        """JSON for ``AIRFLOW_CONN_<ID>`` pointing at this sandbox; ``extra`` e.g. ``{"max_retries": 0}``."""
        conn: dict[str, Any] = {"conn_type": conn_type, "host": self.url, "password": self._api_key}
        if extra:
            conn["extra"] = dict(extra)
        return json.dumps(conn)

    def client(self, timeout: float = 10.0) -> SandboxClient:
        """A :class:`SandboxClient` for this server (e.g. to hand its URL to another process)."""
        return SandboxClient(self.url, timeout=timeout)

    # -- controls, delegated to the state ----------------------------------------------------------------

    def balance(self) -> dict[str, Any]:
        """The balance ``data`` exactly as ``GET /api/v1/credits/balance`` serves it."""
        return self.state.balance()

    def set_balance(
        self,
        monthly: int | None = None,
        bonus: int | None = None,
        used: int | None = None,
        reset_day: int | None = None,
        last_reset_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`SandboxState.set_balance`."""
        return self.state.set_balance(monthly, bonus, used, reset_day, last_reset_at)

    def spend(self, amount: int, description: str = "Lead search: sandbox") -> dict[str, Any]:
        """See :meth:`SandboxState.spend`."""
        return self.state.spend(amount, description)

    def top_up(self, amount: int, description: str = "Bonus credits") -> dict[str, Any]:
        """See :meth:`SandboxState.top_up`."""
        return self.state.top_up(amount, description)

    def reset_month(self, at: datetime | str | None = None) -> dict[str, Any]:
        """See :meth:`SandboxState.reset_month`."""
        return self.state.reset_month(at)

    def add_transaction(
        self,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: sandbox",
        created_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`SandboxState.add_transaction`."""
        return self.state.add_transaction(type, amount, description, created_at)

    def insert_transactions(
        self,
        count: int = 1,
        *,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: inserted",
        created_at: datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """See :meth:`SandboxState.insert_transactions`."""
        return self.state.insert_transactions(
            count, type=type, amount=amount, description=description, created_at=created_at
        )

    def delete_transaction(self, transaction_id: str) -> dict[str, Any]:
        """See :meth:`SandboxState.delete_transaction`."""
        return self.state.delete_transaction(transaction_id)

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        return self.state.inject(fault, times)

    def pending_faults(self) -> list[dict[str, Any]]:
        return self.state.pending_faults()

    def clear_faults(self) -> int:
        return self.state.clear_faults()

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests served (method, path, query, auth_valid, status, fault), oldest first; never
        headers or the key."""
        return self.state.requests

    def request_count(self, path: str | None = None) -> int:
        return self.state.request_count(path)

    def reset_request_log(self) -> None:
        self.state.reset_request_log()


class SandboxClient(FaultShortcuts):
    """Drive a sandbox in another process through its ``/_sandbox/`` endpoints (``urllib`` only).

    For a DAG task that stands in for real work: ``SandboxClient(url).spend(12, "Lead search: ...")``.
    Errors mirror the in-process API: ``ValueError`` for bad input (HTTP 400), ``InsufficientCredits``
    (409), ``KeyError`` for an unknown transaction, :class:`SandboxError` for anything else, including an
    unreachable sandbox. Environment proxies are bypassed: the sandbox is local by design.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http(s) base URL such as http://127.0.0.1:8765, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<SandboxClient {self.url}>"

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        return self._call_full(method, path, payload)["data"]

    def _call_full(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else _json_bytes(dict(payload))
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": JSON_TYPE, "Accept": JSON_TYPE},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                message = _error_message(exc.read()) or exc.reason
            if exc.code == 400:
                raise ValueError(message) from None
            if exc.code == 409:
                raise InsufficientCredits(message) from None
            if exc.code == 404 and path.startswith(ADMIN_PREFIX + "transactions/"):
                raise KeyError(message) from None
            raise SandboxError(f"{method} {self.url}{path} failed with HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SandboxError(f"could not reach the LocalLeads sandbox at {self.url}: {reason}") from exc
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise SandboxError(f"{method} {self.url}{path} returned a body that is not JSON") from exc
        if not isinstance(decoded, dict) or decoded.get("success") is not True or "data" not in decoded:
            raise SandboxError(f"{method} {self.url}{path} returned an unexpected body: {decoded!r:.200}")
        return decoded

    # -- controls ----------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Balance, number of transactions, queued faults and request count."""
        result: dict[str, Any] = self._call("GET", "/_sandbox/state")
        return result

    def balance(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sandbox/balance")
        return result

    def set_balance(
        self,
        monthly: int | None = None,
        bonus: int | None = None,
        used: int | None = None,
        reset_day: int | None = None,
        last_reset_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"monthly": monthly, "bonus": bonus, "used": used, "reset_day": reset_day}
        if isinstance(last_reset_at, datetime):
            last_reset_at = last_reset_at.isoformat()
        fields["last_reset_at"] = last_reset_at
        result: dict[str, Any] = self._call(
            "POST", "/_sandbox/balance", {k: v for k, v in fields.items() if v is not None}
        )
        return result

    def spend(self, amount: int, description: str = "Lead search: sandbox") -> dict[str, Any]:
        """Spend credits; returns the ``DEDUCTION`` transaction. ``InsufficientCredits`` if short."""
        result: dict[str, Any] = self._call("POST", "/_sandbox/spend", {"amount": amount, "description": description})[
            "transaction"
        ]
        return result

    def top_up(self, amount: int, description: str = "Bonus credits") -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_sandbox/top-up", {"amount": amount, "description": description})[
            "transaction"
        ]
        return result

    def reset_month(self, at: datetime | str | None = None) -> dict[str, Any]:
        payload = {} if at is None else {"at": at.isoformat() if isinstance(at, datetime) else at}
        result: dict[str, Any] = self._call("POST", "/_sandbox/reset-month", payload)["transaction"]
        return result

    def insert_transactions(
        self,
        count: int = 1,
        *,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: inserted",
        created_at: datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        payload: dict[str, Any] = {"count": count, "type": type, "amount": amount, "description": description}
        if created_at is not None:
            payload["created_at"] = created_at.isoformat() if isinstance(created_at, datetime) else created_at
        result: list[dict[str, Any]] = self._call("POST", "/_sandbox/transactions", payload)
        return result

    def delete_transaction(self, transaction_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", "/_sandbox/transactions/" + quote(transaction_id, safe=""))
        return result

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        self._call("POST", "/_sandbox/faults", {**fault.to_json(), "times": times})
        return fault

    def pending_faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_sandbox/faults")
        return result

    def clear_faults(self) -> int:
        cleared: int = self._call("DELETE", "/_sandbox/faults")["cleared"]
        return cleared

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Recorded API requests (dicts like :meth:`RecordedRequest.to_json`), optionally for one path."""
        suffix = "" if path is None else "?" + urlencode({"path": path})
        result: list[dict[str, Any]] = self._call("GET", "/_sandbox/requests" + suffix)
        return result

    def request_count(self, path: str | None = None) -> int:
        suffix = "" if path is None else "?" + urlencode({"path": path})
        total: int = self._call_full("GET", "/_sandbox/requests" + suffix)["meta"]["total"]
        return total

    def reset_request_log(self) -> None:
        self._call("DELETE", "/_sandbox/requests")


def _error_message(raw: bytes) -> str | None:
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    if isinstance(decoded, dict):
        error = decoded.get("error")
        if isinstance(error, str):
            return error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return None
