"""Misbehaviour on demand: what a fault is, the queue that holds them, and the answer each one gives.

A client is only as good as its handling of a bad answer, so the sandbox can stand in for a rate
limiter, a failing gateway, a slow upstream or a proxy's login page. Faults apply before
authentication and routing, like a proxy in front of the real API would; admin paths never see them.
"""

from __future__ import annotations

import http
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_localleads.sandbox.values import check_int, check_str, check_times
from airflow_provider_localleads.sandbox.wire import (
    API_PREFIX,
    HTML_TYPE,
    JSON_TYPE,
    Answer,
    error_body,
    json_bytes,
)

__all__ = [
    "ERROR_KINDS",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "Fault",
    "FaultQueue",
    "FaultShortcuts",
    "render_fault",
]

#: Faults that answer with an error status instead of the API.
ERROR_KINDS: Final = frozenset({"error", "rate_limit"})
#: Faults that answer ``200`` with a body a careful client must refuse.
MALFORMED_KINDS: Final = frozenset(
    {
        "html",
        "empty",
        "truncated",
        "array",
        "success_false_string",
        "success_false_object",
        "missing_field",
        "mistyped_field",
        "not_json",
    }
)
#: Every fault kind; ``slow`` only delays the normal answer.
FAULT_KINDS: Final = ERROR_KINDS | MALFORMED_KINDS | {"slow"}

_PROXY_PAGE: Final = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in - Corporate Proxy</title></head>"
    b"<body><h1>Authentication required</h1><p>Please sign in to continue browsing.</p></body></html>\n"
)


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for the sandbox to show instead of (or before) a normal answer.

    Faults sit in a FIFO queue and are consumed by the next API request whose path matches (``path``
    ``None`` matches every path under ``/api/``). They apply before authentication and routing, like a
    proxy, gateway or rate limiter in front of the real API would. Admin paths never see them.

    Kinds:

    * ``error``: ``status`` (default 503) with ``body``/``content_type`` (default: a JSON error body) and
      an optional ``Retry-After`` header.
    * ``rate_limit``: ``429`` with ``Retry-After: retry_after`` when given (``rate_limit_next`` defaults
      it to ``"1"``; any string is sent verbatim, so tests can send seconds, an HTTP date or garbage).
    * ``slow``: waits ``delay_seconds`` then answers normally.
    * malformed ``200`` answers: ``html`` (a proxy's login page), ``empty``, ``truncated`` (the real JSON
      cut half-way, with a matching ``Content-Length``), ``array`` (top-level JSON array),
      ``success_false_string``, ``success_false_object``, ``missing_field`` (balance without
      ``availableCredits``; transactions without ``meta.total``), ``mistyped_field``
      (``availableCredits``/``meta.total`` as a string such as ``"82"``), ``not_json`` (``oops`` labelled
      ``application/json``).

    Any kind may also carry ``delay_seconds``: a slow 503 is a realistic gateway timeout.
    """

    kind: str
    status: int | None = None
    retry_after: str | None = None
    body: str | bytes | None = None
    content_type: str | None = None
    delay_seconds: float = 0.0
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(sorted(FAULT_KINDS))}; got {self.kind!r}")
        status = self.status
        if self.kind == "error":
            status = 503 if status is None else check_int("status", status, minimum=400, maximum=599)
        elif self.kind == "rate_limit":
            if status not in (None, 429):
                raise ValueError(f"status of a rate_limit fault is always 429, got {status!r}")
            status = 429
        elif status is not None:
            raise ValueError(f"status applies only to 'error' and 'rate_limit' faults, not {self.kind!r}")
        object.__setattr__(self, "status", status)

        if self.retry_after is not None:
            check_str("retry_after", self.retry_after)
            if any(ch in self.retry_after for ch in "\r\n"):
                raise ValueError("retry_after must not contain line breaks")
            if self.kind not in ERROR_KINDS:
                raise ValueError(f"retry_after applies only to 'error' and 'rate_limit' faults, not {self.kind!r}")

        if self.body is not None and not isinstance(self.body, str | bytes):
            raise ValueError(f"body must be a string or bytes, got {self.body!r}")
        if (self.body is not None or self.content_type is not None) and self.kind not in ERROR_KINDS:
            raise ValueError(f"body/content_type apply only to 'error' and 'rate_limit' faults, not {self.kind!r}")
        if self.content_type is not None:
            check_str("content_type", self.content_type)
            if any(ch in self.content_type for ch in "\r\n"):
                raise ValueError("content_type must not contain line breaks")

        delay = self.delay_seconds
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay_seconds must be a finite number >= 0, got {delay!r}")
        object.__setattr__(self, "delay_seconds", float(delay))

        if self.path is not None and (not isinstance(self.path, str) or not self.path.startswith(API_PREFIX)):
            raise ValueError(f"path must be an API path starting with {API_PREFIX!r}, got {self.path!r}")

    def matches(self, path: str) -> bool:
        return self.path is None or self.path == path

    def to_json(self) -> dict[str, Any]:
        """JSON form used by the admin endpoints (``delay`` is the admin spelling of ``delay_seconds``)."""
        body = self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) else self.body
        return {
            "kind": self.kind,
            "status": self.status,
            "retry_after": self.retry_after,
            "body": body,
            "content_type": self.content_type,
            "delay": self.delay_seconds,
            "path": self.path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build from admin JSON. ``kind`` may be left out when the rest says it: a ``status`` of 429
        means ``rate_limit``, another ``status`` means ``error``, only a ``delay`` means ``slow``.
        A ``rate_limit`` without a ``retry_after`` key gets ``"1"``; ``null`` omits the header."""
        kind = data.get("kind")
        if kind is None:
            if data.get("status") == 429:
                kind = "rate_limit"
            elif data.get("status") is not None:
                kind = "error"
            elif data.get("delay") is not None:
                kind = "slow"
            else:
                raise ValueError("kind is required (or give status/delay to imply it)")
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError(f"body must be a string, got {body!r}")
        delay = data.get("delay")
        # Like rate_limit_next: a 429 says when to come back unless the caller sends null explicitly.
        retry_after = data.get("retry_after", "1" if kind == "rate_limit" else None)
        return cls(
            kind=check_str("kind", kind),
            status=data.get("status"),
            retry_after=retry_after,
            body=body,
            content_type=data.get("content_type"),
            delay_seconds=0.0 if delay is None else delay,
            path=data.get("path"),
        )


@dataclass
class _QueuedFault:
    fault: Fault
    remaining: int | None  # None: until clear()


class FaultQueue:
    """Queued faults, oldest first, each for a number of matching requests. Guarded by the
    organisation's lock, so a snapshot of the state is one instant."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._entries: deque[_QueuedFault] = deque()

    def push(self, fault: Fault, times: int | None = 1) -> Fault:
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        remaining = check_times(times)
        with self._lock:
            self._entries.append(_QueuedFault(fault, remaining))
        return fault

    def take(self, path: str) -> Fault | None:
        """Consume the oldest queued fault that matches ``path``; a later matching fault is taken
        before an earlier one for another path."""
        with self._lock:
            for entry in self._entries:
                if entry.fault.matches(path):
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining == 0:
                            self._entries.remove(entry)
                    return entry.fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**entry.fault.to_json(), "times": entry.remaining} for entry in self._entries]

    def clear(self) -> int:
        with self._lock:
            dropped = len(self._entries)
            self._entries.clear()
            return dropped


class FaultShortcuts:
    """The readable ``*_next`` helpers, written once on top of ``inject``.

    Shared by the in-process state, the server object and the cross-process admin client, so the same
    test line works whichever one a test holds.
    """

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        """Queue ``fault`` for the next ``times`` matching requests (``None``: until ``clear_faults``)."""
        raise NotImplementedError

    def fail_next(
        self,
        status: int = 503,
        times: int | None = 1,
        retry_after: str | None = None,
        body: str | bytes | None = None,
        *,
        content_type: str | None = None,
        delay_seconds: float = 0.0,
        path: str | None = None,
    ) -> Fault:
        """Answer the next request(s) with ``status``; e.g. a proxy's page:
        ``fail_next(502, body="<html>Bad gateway</html>", content_type="text/html")``."""
        fault = Fault(
            "error",
            status=status,
            retry_after=retry_after,
            body=body,
            content_type=content_type,
            delay_seconds=delay_seconds,
            path=path,
        )
        return self.inject(fault, times)

    def rate_limit_next(
        self, retry_after: str | None = "1", times: int | None = 1, *, path: str | None = None
    ) -> Fault:
        """Answer ``429`` with ``Retry-After: retry_after`` (``None`` leaves the header out)."""
        return self.inject(Fault("rate_limit", retry_after=retry_after, path=path), times)

    def slow_next(self, delay_seconds: float, times: int | None = 1, *, path: str | None = None) -> Fault:
        """Wait ``delay_seconds`` before the normal answer (to exercise client timeouts)."""
        return self.inject(Fault("slow", delay_seconds=delay_seconds, path=path), times)

    def malformed_next(self, kind: str, times: int | None = 1, *, path: str | None = None) -> Fault:
        """Answer ``200`` with a malformed body; ``kind`` is one of ``MALFORMED_KINDS``."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"kind must be one of {', '.join(sorted(MALFORMED_KINDS))}; got {kind!r}")
        return self.inject(Fault(kind, path=path), times)


def render_fault(fault: Fault, success: Callable[[], dict[str, Any]]) -> Answer:
    """The answer ``fault`` gives instead of the API's (not for ``slow``, which only delays).

    ``success`` returns the normal success body of the request, which the ``truncated``, ``array``,
    ``missing_field`` and ``mistyped_field`` kinds distort; it is called only for those.
    """
    kind = fault.kind
    if kind in ERROR_KINDS:
        status = fault.status or 503
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        if fault.body is not None:
            body = fault.body.encode("utf-8") if isinstance(fault.body, str) else fault.body
        elif kind == "rate_limit":
            body = error_body({"code": "RATE_LIMITED", "message": "Too many requests; slow down"})
        else:
            body = error_body(http.HTTPStatus(status).phrase)
        return Answer(status, body, fault.content_type or JSON_TYPE, headers)
    assert kind in MALFORMED_KINDS
    if kind == "html":
        return Answer(200, _PROXY_PAGE, HTML_TYPE)
    if kind == "empty":
        return Answer(200, b"")
    if kind == "not_json":
        return Answer(200, b"oops")
    if kind == "success_false_string":
        return Answer(200, error_body("Something went wrong"))
    if kind == "success_false_object":
        return Answer(200, error_body({"code": "INTERNAL_ERROR", "message": "Something went wrong"}))
    payload = success()
    if kind == "truncated":
        full = json_bytes(payload)
        return Answer(200, full[: len(full) // 2])
    if kind == "array":
        return Answer(200, json_bytes([payload]))
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
    return Answer(200, json_bytes(payload))
