"""The pagination tests' in-memory history (tests/history_support.py) served over HTTP on loopback.

``GET /api/v1/credits/transactions?limit=&offset=`` and nothing else; the history's ``before``
runs under its lock before each page is served, so a test changes the history exactly between two
requests of the client.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from history_support import History


class HistoryServer(History):
    """A ``History`` whose pages the hook reads over HTTP."""

    def __init__(self) -> None:
        super().__init__([])
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.history = self  # type: ignore[attr-defined]
        self._httpd.daemon_threads = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="rel-history-server"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads (they time out when idle)
        self._thread.join(5)

    def page(self, limit: int, offset: int) -> dict[str, Any]:
        window, total = self.window(limit, offset)
        return {
            "success": True,
            "data": [t.to_json() for t in window],
            "meta": {"total": total, "limit": limit, "offset": offset},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    timeout = 0.2  # an idle keep-alive connection ends soon, so stop() never waits long

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        history: HistoryServer = self.server.history  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path != "/api/v1/credits/transactions":
            self._send(404, {"success": False, "error": "not found"})
            return
        limit = int(query.get("limit", ["50"])[0])
        offset = int(query.get("offset", ["0"])[0])
        self._send(200, history.page(limit, offset))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
