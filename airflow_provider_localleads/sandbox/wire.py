"""What the sandbox's answers are made of: the paths, content types, JSON encoding and one answer.

Shared by the API emulation, the faults, the admin routes and the client, so a path or the shape of
an error body is written in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple

__all__ = [
    "ADMIN_PREFIX",
    "API_PREFIX",
    "BALANCE_PATH",
    "HTML_TYPE",
    "JSON_TYPE",
    "TRANSACTIONS_PATH",
    "Answer",
    "error_answer",
    "error_body",
    "json_bytes",
]

API_PREFIX: Final = "/api/"
BALANCE_PATH: Final = "/api/v1/credits/balance"
TRANSACTIONS_PATH: Final = "/api/v1/credits/transactions"
#: The controls (no authentication; see ``server.SandboxServer``).
ADMIN_PREFIX: Final = "/_sandbox/"

JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


class Answer(NamedTuple):
    """One HTTP answer, built by the API, a fault or an admin route and sent by the handler."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = _NO_HEADERS


def json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def error_body(error: str | Mapping[str, str]) -> bytes:
    """``{"success": false, "error": ...}``: the shape the real API's errors are expected to take."""
    return json_bytes({"success": False, "error": error})


def error_answer(status: int, error: str | Mapping[str, str], headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, error_body(error), JSON_TYPE, headers or _NO_HEADERS)
