"""What the sandbox remembers about the API requests it served, for tests to assert on.

Bounded (a long benchmark against the CLI must not grow memory without bound) while the counts per
path stay exact beyond the bound. Guarded by the organisation's lock, so a snapshot of the state is
one instant.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from airflow_provider_localleads.sandbox.values import check_int, format_timestamp

__all__ = ["DEFAULT_MAX_LOGGED_REQUESTS", "RecordedRequest", "RequestLog"]

#: Default cap on the request log. Counts returned by ``request_count`` stay exact beyond the cap.
DEFAULT_MAX_LOGGED_REQUESTS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What the sandbox remembers about one API request.

    Deliberately without headers: the ``Authorization`` header carries the key, and a request log that
    ends up in a test report or a CI artifact must not leak it. ``auth_valid`` says all a test needs.
    """

    request_id: str
    method: str
    path: str
    query: dict[str, str]
    auth_valid: bool
    status: int
    fault: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "auth_valid": self.auth_valid,
            "status": self.status,
            "fault": self.fault,
            "at": format_timestamp(self.at),
        }


class RequestLog:
    """Request ids, the last ``max_logged`` records and exact counts per path."""

    def __init__(self, lock: threading.RLock, max_logged: int = DEFAULT_MAX_LOGGED_REQUESTS) -> None:
        self._lock = lock
        self._records: deque[RecordedRequest] = deque(maxlen=check_int("max_logged_requests", max_logged, minimum=1))
        self._counts: Counter[str] = Counter()
        self._next_id = 1

    def next_id(self) -> str:
        with self._lock:
            request_id = f"req_{self._next_id}"
            self._next_id += 1
            return request_id

    def append(self, record: RecordedRequest) -> None:
        with self._lock:
            self._records.append(record)
            self._counts[record.path] += 1

    def records(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def count(self, path: str | None = None) -> int:
        with self._lock:
            if path is None:
                return sum(self._counts.values())
            return self._counts[path]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._counts.clear()
