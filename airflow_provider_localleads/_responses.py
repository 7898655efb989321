"""Turn one HTTP answer (status, headers, body bytes) into the API's JSON object or a typed error.

Shared by the synchronous (requests) and asynchronous (httpx) paths so both judge answers the same
way. Error messages quote at most a short, whitespace-collapsed excerpt of what the server said,
passed through ``redact`` so that a server echoing the API key back cannot leak it into logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_localleads._retry import parse_retry_after
from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsError,
    LocalLeadsRateLimitError,
    LocalLeadsRequestError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)

#: Headers that carry the server's (or its CDN's) request id, quoted in errors for support tickets.
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")
#: The most a response body may hold; a page of 100 transactions is ~25 KB.
MAX_BODY_BYTES = 4 * 1024 * 1024

_WHITESPACE = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]{0,200}>")


def request_id_from(headers: Mapping[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in REQUEST_ID_HEADERS:
        value = lowered.get(name)
        if value:
            return value[:100]
    return None


def excerpt(text: str, redact: Callable[[str], str], limit: int = 200) -> str:
    """A short single-line excerpt of a body (HTML tags dropped) that is safe to log."""
    # Redact the whole text before cutting it: a key cut in half would no longer match. Bodies are
    # already capped at MAX_BODY_BYTES by the readers.
    text = redact(_WHITESPACE.sub(" ", _TAGS.sub(" ", text)).strip())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def decode_json(body: bytes) -> Any:
    """Parse JSON strictly: UTF-8 (a BOM is tolerated), no NaN/Infinity. Raises ValueError."""
    text = body.decode("utf-8-sig")
    return json.loads(text, parse_constant=_reject_constant)


def _server_message(parsed: Any, body: bytes, redact: Callable[[str], str]) -> str:
    """What the server said about the error: the JSON ``error`` (string or object) or a body excerpt."""
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, str):
            return excerpt(error, redact)
        if isinstance(error, dict):
            parts = [str(error[k]) for k in ("code", "message") if isinstance(error.get(k), str | int)]
            if parts:
                return excerpt(": ".join(parts), redact)
            return excerpt(json.dumps(error), redact)
    return excerpt(body.decode("utf-8", "replace"), redact)


def interpret_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    path: str,
    redact: Callable[[str], str],
) -> dict[str, Any]:
    """Return the JSON object of a successful answer, or raise the LocalLeadsError it deserves."""
    request_id = request_id_from(headers)
    context: dict[str, Any] = {"path": path, "status_code": status, "request_id": request_id}
    parsed: Any = None
    json_ok = False
    if body.strip():
        try:
            parsed = decode_json(body)
            json_ok = True
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass

    if 200 <= status < 300:
        if not json_ok:
            looks_html = body.lstrip()[:1] == b"<"
            what = (
                "an HTML page" if looks_html else ("an empty body" if not body.strip() else "a body that is not JSON")
            )
            raise LocalLeadsResponseError(
                f"The LocalLeads API answered with {what} instead of JSON"
                + (f" ({excerpt(body.decode('utf-8', 'replace'), redact, 120)!r})" if body.strip() else "")
                + ". A proxy, captive portal or wrong base URL may be in the way; check the connection's host",
                **context,
            )
        if not isinstance(parsed, dict):
            raise LocalLeadsResponseError(
                f"The LocalLeads API answered with a JSON {type(parsed).__name__}, expected an object with "
                "'success' and 'data'; check the connection's host points at the LocalLeads API",
                **context,
            )
        success = parsed.get("success")
        if success is True:
            return parsed
        if success is False:
            raise LocalLeadsResponseError(
                f"The LocalLeads API reported a failure: {_server_message(parsed, body, redact)}", **context
            )
        raise LocalLeadsResponseError(
            "The LocalLeads API answer has no boolean 'success' field; check the connection's host", **context
        )

    said = _server_message(parsed if json_ok else None, body, redact)
    said = f" The API said: {said!r}." if said else ""
    error: LocalLeadsError
    if status in (401, 403):
        error = LocalLeadsAuthenticationError(
            f"The LocalLeads API refused the API key ({'unauthorised' if status == 401 else 'forbidden'})."
            f"{said} Check the API key in the connection's password field (or LOCALLEADS_API_KEY) and "
            "that it belongs to the right organisation",
            **context,
        )
    elif status == 429:
        error = LocalLeadsRateLimitError(
            f"The LocalLeads API is rate limiting this API key.{said} Retry later or reduce how often "
            "tasks using this key call the API (e.g. a longer poke_interval)",
            retry_after=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
            **context,
        )
    elif status == 408 or status >= 500:
        error = LocalLeadsServerError(
            f"The LocalLeads API (or a proxy in front of it) failed.{said} This is usually temporary: "
            "retry later; if it persists, check the provider's status page",
            retry_after=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
            **context,
        )
    elif 300 <= status < 400:
        location = excerpt(headers.get("Location") or headers.get("location") or "?", redact, 200)
        error = LocalLeadsResponseError(
            f"The LocalLeads API redirected to {location}; redirects are not followed so the API key is "
            "never sent elsewhere. Set the connection's host to the final base URL",
            **context,
        )
    else:
        error = LocalLeadsRequestError(
            f"The LocalLeads API rejected the request.{said} Check the arguments passed to the hook "
            "and that the connection's host is the API's base URL",
            **context,
        )
    raise error
