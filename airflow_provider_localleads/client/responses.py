"""One HTTP answer (status, headers, body) to a model or a typed error, the same for both paths.

Whatever the bytes, :func:`parse_answer` gives a valid model or a LocalLeadsError. The ``Content-Type``
is trusted neither way: the body is judged on what it is. What the server said is quoted only as a
short excerpt passed through ``redact``, so a server echoing the API key back cannot leak it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_localleads.client.retry import parse_retry_after
from airflow_provider_localleads.client.values import excerpt
from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsError,
    LocalLeadsRateLimitError,
    LocalLeadsRequestError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.models import OversizedInteger

if TYPE_CHECKING:
    from airflow_provider_localleads.models import TransactionPage

T = TypeVar("T")

#: The server's (or its CDN's) request id, quoted in errors for support tickets.
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")
#: The most a response body may hold; a page of 100 transactions is ~25 KB.
MAX_BODY_BYTES = 4 * 1024 * 1024

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def request_id_from(headers: Mapping[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in REQUEST_ID_HEADERS:
        value = lowered.get(name)
        if value:
            return value[:100]
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _parse_int(digits: str) -> int | OversizedInteger:
    try:
        return int(digits)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return OversizedInteger(len(digits.lstrip("-")))


def _without_lone_surrogates(value: Any) -> Any:
    """U+FFFD for every lone surrogate in strings and keys: Python accepts them, but a string holding
    one cannot be encoded as UTF-8, so logging or storing it would crash later. Iterative: a deeply
    nested document cannot exhaust the stack here."""

    def fix(item: Any) -> Any:
        return _SURROGATE.sub("\ufffd", item) if isinstance(item, str) else item

    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = fix(item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            fixed = {fix(k): v for k, v in item.items()}
            item.clear()
            item.update(fixed)
            stack.extend((item, k) for k in item)
    return root[0]


def decode_json(body: bytes) -> Any:
    """Strict JSON (UTF-8, a BOM tolerated, no NaN/Infinity); an integer longer than Python converts is
    valid JSON, so it is marked and its field named rather than the body called "not JSON"."""
    text = body.decode("utf-8-sig")
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        if "integer string conversion" not in str(err):
            raise
        parsed = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    if _SURROGATE_ESCAPE.search(text):
        parsed = _without_lone_surrogates(parsed)
    return parsed


def _server_message(parsed: Any, body: bytes, redact: Callable[[str], str]) -> str:
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        parts = [str(error[k]) for k in ("code", "message") if isinstance(error.get(k), str | int)]
        error = ": ".join(parts) if parts else json.dumps(error, default=str)
    return excerpt(error if isinstance(error, str) else body.decode("utf-8", "replace"), redact)


def _json_object(status: int, headers: Mapping[str, str], body: bytes, redact: Callable[[str], str]) -> dict[str, Any]:
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
                + ". A proxy, captive portal or wrong base URL may be in the way; check the connection's host"
            )
        if not isinstance(parsed, dict):
            raise LocalLeadsResponseError(
                f"The LocalLeads API answered with a JSON {type(parsed).__name__}, expected an object with "
                "'success' and 'data'; check the connection's host points at the LocalLeads API"
            )
        success = parsed.get("success")
        if success is True:
            return parsed
        if success is False:
            raise LocalLeadsResponseError(
                f"The LocalLeads API reported a failure: {_server_message(parsed, body, redact)}"
            )
        raise LocalLeadsResponseError(
            "The LocalLeads API answer has no boolean 'success' field; check the connection's host"
        )

    said = _server_message(parsed if json_ok else None, body, redact)
    said = f" The API said: {said!r}." if said else ""
    retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
    if status in (401, 403):
        raise LocalLeadsAuthenticationError(
            f"The LocalLeads API refused the API key ({'unauthorised' if status == 401 else 'forbidden'})."
            f"{said} Check the API key in the connection's password field (or LOCALLEADS_API_KEY) and "
            "that it belongs to the right organisation"
        )
    if status == 429:
        raise LocalLeadsRateLimitError(
            f"The LocalLeads API is rate limiting this API key.{said} Retry later or reduce how often "
            "tasks using this key call the API (e.g. a longer poke_interval)",
            retry_after=retry_after,
        )
    if status == 408 or status >= 500:
        raise LocalLeadsServerError(
            f"The LocalLeads API (or a proxy in front of it) failed.{said} This is usually temporary: "
            "retry later; if it persists, check the provider's status page",
            retry_after=retry_after,
        )
    if 300 <= status < 400:
        location = excerpt(headers.get("Location") or headers.get("location") or "?", redact, 200)
        raise LocalLeadsResponseError(
            f"The LocalLeads API redirected to {location}; redirects are not followed so the API key is "
            "never sent elsewhere. Set the connection's host to the final base URL"
        )
    raise LocalLeadsRequestError(
        f"The LocalLeads API rejected the request.{said} Check the arguments passed to the hook "
        "and that the connection's host is the API's base URL"
    )


def _in_context(
    err: Exception, status: int, headers: Mapping[str, str], *, path: str, redact: Callable[[str], str]
) -> LocalLeadsError:
    """``err`` with the answer's HTTP context: the one place it is attached. The request id is the
    server's text too (a proxy may echo the Authorization header), so it is redacted like the rest.
    """
    if not isinstance(err, LocalLeadsError):
        err = LocalLeadsResponseError(
            f"Unexpected response from the LocalLeads API: a value is out of range ({type(err).__name__}: "
            f"{excerpt(str(err), limit=80)}); check the host in the connection"
        )
    request_id = request_id_from(headers)
    return type(err)(
        redact(err.summary),
        path=path,
        status_code=status,
        request_id=None if request_id is None else redact(request_id),
        retry_after=err.retry_after,
    )


def parse_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    path: str,
    redact: Callable[[str], str],
    build: Callable[[Mapping[str, Any]], T],
) -> T:
    """``build`` (``Model.from_response``) gets the JSON object of a successful answer. A value Python
    cannot represent (OverflowError/ValueError, e.g. a year-1 timestamp with a positive offset) is a
    LocalLeadsResponseError."""
    try:
        return build(_json_object(status, headers, body, redact))
    except (LocalLeadsError, OverflowError, ValueError) as err:
        raise _in_context(err, status, headers, path=path, redact=redact) from None


def check_page(page: TransactionPage, *, limit: int, offset: int, redact: Callable[[str], str]) -> TransactionPage:
    """``page`` if it is the page asked for, else a LocalLeadsResponseError (call it inside
    :func:`parse_answer`'s ``build``, for the HTTP context). A page with an id twice is refused, not
    de-duplicated: a page that contradicts itself cannot be paged exactly once.
    """
    problem = _page_problem(page, limit=limit, offset=offset, redact=redact)
    if problem is not None:
        raise LocalLeadsResponseError(
            f"Unexpected response from the LocalLeads API: {problem}. Check the host in the connection; "
            "if it is right, report this to LocalLeads with the request id"
        )
    return page


def _page_problem(page: TransactionPage, *, limit: int, offset: int, redact: Callable[[str], str]) -> str | None:
    if page.offset != offset:
        return (
            f"meta.offset is {page.offset} but offset={offset} was asked for; a proxy or cache may be "
            "dropping the query string"
        )
    if len(page.items) > limit:
        return f"the page holds {len(page.items)} transactions but limit={limit} was asked for"
    for i, (newer, older) in enumerate(zip(page.items, page.items[1:], strict=False)):
        if older.created_at > newer.created_at:
            return (
                f"data[{i + 1}] ({excerpt(older.id, redact, 60)!r}) is newer than data[{i}] before it: the page "
                "is out of order (the API lists newest first), so the history cannot be listed reliably"
            )
    seen: set[str] = set()
    for item in page.items:
        if item.id in seen:
            return (
                f"transaction id {excerpt(item.id, redact, 60)!r} appears twice in one page, so the "
                "history cannot be listed exactly once"
            )
        seen.add(item.id)
    return None
