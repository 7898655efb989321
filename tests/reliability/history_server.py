"""A minimal in-memory transactions API for pagination tests, with a hook between requests.

Unlike the sandbox it can order equal timestamps differently on every request (as SQL
``ORDER BY created_at ... OFFSET`` without a unique tie-breaker may), and it calls
``before_page(request_number)`` under its lock before serving each page, so a test changes the
history exactly between two requests of the client.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Txn:
    id: str
    created_ms: int  # milliseconds after EPOCH
    seq: int  # insertion order (newer wins a tie when the order is stable)

    def to_json(self) -> dict[str, Any]:
        when = EPOCH + timedelta(milliseconds=self.created_ms)
        return {
            "id": self.id,
            "type": "DEDUCTION",
            "amount": -1,
            "description": f"txn {self.id}",
            "createdAt": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


class HistoryServer:
    """``GET /api/v1/credits/transactions?limit=&offset=`` over an in-memory list; nothing else."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.items: list[Txn] = []
        self.unstable_ties = False
        self.rng = random.Random(0)
        self.requests = 0
        self.max_total = 0
        self.before_page: Callable[[int], None] | None = None
        self._seq = 0
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

    # -- state -------------------------------------------------------------------------------------------

    def reset(self, created_ms: list[int], *, unstable_ties: bool = False, seed: int = 0) -> None:
        with self.lock:
            self._seq = 0
            self.items = []
            self.add(created_ms)
            self.unstable_ties = unstable_ties
            self.rng = random.Random(seed)
            self.requests = 0
            self.max_total = len(self.items)
            self.before_page = None

    def add(self, created_ms: list[int]) -> list[Txn]:
        with self.lock:
            new = []
            for ms in created_ms:
                self._seq += 1
                new.append(Txn(f"t{self._seq:05d}", ms, self._seq))
            self.items.extend(new)
            self.max_total = max(self.max_total, len(self.items))
            return new

    def delete(self, txn_id: str) -> None:
        with self.lock:
            self.items = [t for t in self.items if t.id != txn_id]

    def ordered(self) -> list[Txn]:
        """Newest first; ties newest-inserted first, or shuffled per call when ``unstable_ties``."""
        with self.lock:
            if not self.unstable_ties:
                return sorted(self.items, key=lambda t: (t.created_ms, t.seq), reverse=True)
            keyed = [(t.created_ms, self.rng.random(), t) for t in self.items]
            keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
            return [k[2] for k in keyed]

    def newest_ms(self) -> int:
        with self.lock:
            return max((t.created_ms for t in self.items), default=0)

    # -- serving -----------------------------------------------------------------------------------------

    def page(self, limit: int, offset: int) -> dict[str, Any]:
        with self.lock:
            self.requests += 1
            if self.before_page is not None:
                self.before_page(self.requests)
            ordered = self.ordered()
            window = ordered[offset : offset + limit]
            return {
                "success": True,
                "data": [t.to_json() for t in window],
                "meta": {"total": len(ordered), "limit": limit, "offset": offset},
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
