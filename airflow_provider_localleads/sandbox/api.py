"""The emulated LocalLeads Credits API: authentication and the two documented endpoints.

Wire contract, matching ``api-docs/credits.txt``:

* ``GET /api/v1/credits/balance`` and ``GET /api/v1/credits/transactions?limit=&offset=`` with
  ``Authorization: Bearer <key>``; JSON bodies ``{"success": true, "data": ...}``.
* Errors: ``401`` ``{"success": false, "error": {"code": "UNAUTHORIZED", "message": ...}}``, ``400``
  ``{"success": false, "error": "limit must be an integer between 1 and 100"}``, ``404``
  ``{"success": false, "error": "Not found"}``, ``405`` for a method other than ``GET``.

An endpoint is one entry of :data:`ENDPOINTS`: how it answers, and the success body a malformed
fault distorts. Everything about the socket is :mod:`.handler`'s.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_localleads.sandbox.state import SandboxState
from airflow_provider_localleads.sandbox.wire import (
    BALANCE_PATH,
    TRANSACTIONS_PATH,
    Answer,
    error_answer,
    json_bytes,
)

__all__ = [
    "DEFAULT_LIMIT",
    "ENDPOINTS",
    "LIMIT_ERROR",
    "MAX_LIMIT",
    "OFFSET_ERROR",
    "Endpoint",
    "Query",
    "answer",
    "check_auth",
    "success_body",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
LIMIT_ERROR: Final = f"limit must be an integer between 1 and {MAX_LIMIT}"
OFFSET_ERROR: Final = "offset must be an integer >= 0"


@dataclass(frozen=True)
class Query:
    """A request's query string: the first value of each parameter, and which ones were repeated."""

    values: Mapping[str, str]
    repeated: frozenset[str] = frozenset()


def check_auth(header: str | None, api_key: str) -> str | None:
    """``None`` if ``header`` carries the key, else the 401 message (which never quotes it)."""
    if header is None:
        return "Missing Authorization header; send 'Authorization: Bearer <API key>'"
    token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
    if not token or token != token.strip() or any(ch.isspace() for ch in token):
        return "Malformed Authorization header; expected 'Bearer <API key>'"
    expected = api_key.encode("latin-1")
    if not hmac.compare_digest(token.encode("latin-1", "replace"), expected):
        return "Invalid API key"
    return None


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


def _page(state: SandboxState, limit: int, offset: int) -> dict[str, Any]:
    items, total = state.transactions_page(limit, offset)
    return {"success": True, "data": items, "meta": {"total": total, "limit": limit, "offset": offset}}


def _balance(state: SandboxState, query: Query) -> dict[str, Any]:
    return {"success": True, "data": state.balance()}


def _answer_balance(state: SandboxState, query: Query) -> Answer:
    return Answer(200, json_bytes(_balance(state, query)))


def _answer_transactions(state: SandboxState, query: Query) -> Answer:
    limit = (
        None
        if "limit" in query.repeated
        else _parse_bounded_int(query.values.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    )
    if limit is None:
        return error_answer(400, LIMIT_ERROR)
    offset = None if "offset" in query.repeated else _parse_bounded_int(query.values.get("offset"), 0, 0, None)
    if offset is None:
        return error_answer(400, OFFSET_ERROR)
    return Answer(200, json_bytes(_page(state, limit, offset)))


def _transactions(state: SandboxState, query: Query) -> dict[str, Any]:
    """The page a malformed fault distorts: the request's paging when valid, else the default page."""
    limit = _parse_bounded_int(query.values.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    offset = _parse_bounded_int(query.values.get("offset"), 0, 0, None) or 0
    if query.repeated & {"limit", "offset"}:
        limit, offset = DEFAULT_LIMIT, 0
    return _page(state, limit, offset)


@dataclass(frozen=True)
class Endpoint:
    """One ``GET`` endpoint: its answer to an authenticated request, and its success body (never an
    error) for a malformed fault to distort."""

    answer: Callable[[SandboxState, Query], Answer]
    success: Callable[[SandboxState, Query], dict[str, Any]]


ENDPOINTS: Final[Mapping[str, Endpoint]] = {
    BALANCE_PATH: Endpoint(_answer_balance, _balance),
    TRANSACTIONS_PATH: Endpoint(_answer_transactions, _transactions),
}


def answer(state: SandboxState, method: str, path: str, query: Query, auth_error: str | None) -> Answer:
    """The API's answer: 404 for an unknown path, 405 for a method other than GET, then 401, then the
    endpoint's own (so a bad key is reported before a bad query)."""
    endpoint = ENDPOINTS.get(path)
    if endpoint is None:
        return error_answer(404, "Not found")
    if method != "GET":
        return error_answer(405, f"Method {method} not allowed", {"Allow": "GET"})
    if auth_error is not None:
        return error_answer(
            401, {"code": "UNAUTHORIZED", "message": auth_error}, {"WWW-Authenticate": 'Bearer realm="LocalLeads"'}
        )
    return endpoint.answer(state, query)


def success_body(state: SandboxState, path: str, query: Query) -> dict[str, Any]:
    """The success body a malformed fault distorts on ``path``; a path that is not an endpoint gets the
    balance's (a fault stands in front of the routing, like a proxy)."""
    endpoint = ENDPOINTS.get(path)
    return (endpoint.success if endpoint is not None else _balance)(state, query)
