"""Turn one HTTP answer (status, headers, body bytes) into a model or a typed error.

Shared by the synchronous (requests) and asynchronous (httpx) paths so both judge answers the same
way. Error messages quote at most a short, whitespace-collapsed excerpt of what the server said,
passed through ``redact`` so that a server echoing the API key back cannot leak it into logs.

:func:`parse_answer` is the whole path from bytes to a model that the hook uses for every endpoint:
whatever the bytes, the result is a valid model or a ``LocalLeadsError`` (never a
``KeyError``/``TypeError``/bare ``ValueError``). What it decides, beyond the models' own checks:

* The ``Content-Type`` is not trusted either way: the body is judged on what it is (a JSON object
  labelled ``text/plain`` is accepted; an HTML page labelled ``application/json`` is refused).
* Lone UTF-16 surrogates (``"\\ud800"`` escapes) in any string become U+FFFD, so a model can always be
  encoded, logged and stored; NUL characters are valid JSON text and are kept. An integer longer
  than Python converts is valid JSON: the field holding it is named (``OversizedInteger``).
* Field errors carry the HTTP status and the request id, like every other error.

:func:`check_page` refuses a transactions page that is not the one asked for.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
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

#: Headers that carry the server's (or its CDN's) request id, quoted in errors for support tickets.
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")
#: The most a response body may hold; a page of 100 transactions is ~25 KB.
MAX_BODY_BYTES = 4 * 1024 * 1024

#: A JSON escape that can produce a UTF-16 surrogate (paired ones are combined by the parser).
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
    """``value`` with U+FFFD for every lone surrogate in its strings (keys included); iterative, so
    that a deeply nested document cannot exhaust the stack here."""

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
    """Parse JSON strictly: UTF-8 (a BOM is tolerated), no NaN/Infinity. Raises ValueError.

    Lone surrogates (from ``\\udXXX`` escapes) are replaced by U+FFFD: Python would accept them but
    they cannot be encoded as UTF-8, so logging or storing such a string later would crash.
    """
    text = body.decode("utf-8-sig")
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        if "integer string conversion" not in str(err):
            raise
        # Valid JSON with an integer longer than Python converts: parse again (slower), marking it.
        parsed = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    if _SURROGATE_ESCAPE.search(text):
        parsed = _without_lone_surrogates(parsed)
    return parsed


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
            return excerpt(json.dumps(error, default=str), redact)
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
    if request_id is not None:
        # A header is the server's text too: a proxy echoing the Authorization header must not leak it.
        request_id = redact(request_id)
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


def _with_context(
    err: LocalLeadsResponseError, *, path: str, status: int, headers: Mapping[str, str], redact: Callable[[str], str]
) -> LocalLeadsResponseError:
    """A model's field error re-raised with the HTTP status and request id (models only know the path)."""
    message = str(err)
    suffix = f" [GET {path}]"
    if message.endswith(suffix):
        message = message[: -len(suffix)]
    request_id = request_id_from(headers)
    return LocalLeadsResponseError(
        redact(message), path=path, status_code=status, request_id=None if request_id is None else redact(request_id)
    )


def _out_of_range(err: Exception, path: str) -> LocalLeadsResponseError:
    """A value the models accepted as text but Python cannot represent (e.g. a timestamp in year 1
    with a positive offset: converting it to UTC overflows)."""
    return LocalLeadsResponseError(
        f"Unexpected response from the LocalLeads API: a value is out of range ({type(err).__name__}: "
        f"{str(err)[:80]}); check the host in the connection",
        path=path,
    )


@contextlib.contextmanager
def _answer_context(
    *, path: str, status: int, headers: Mapping[str, str], redact: Callable[[str], str]
) -> Iterator[None]:
    """Turn what building a model from an answer raises into a LocalLeadsResponseError with the HTTP
    status and request id: the models' field errors (they only know the path), the page checks
    here, and values Python cannot represent (OverflowError/ValueError)."""
    try:
        yield
    except LocalLeadsResponseError as err:
        raise _with_context(err, path=path, status=status, headers=headers, redact=redact) from None
    except (OverflowError, ValueError) as err:
        raise _with_context(
            _out_of_range(err, path), path=path, status=status, headers=headers, redact=redact
        ) from None


def parse_answer(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    path: str,
    redact: Callable[[str], str],
    build: Callable[[Mapping[str, Any]], T],
) -> T:
    """Bytes to a model: ``build`` gets the JSON object of a successful answer (``Model.from_response``).

    Everything ``build`` raises about the answer's content becomes a LocalLeadsResponseError with
    the HTTP status and request id; errors of the status itself come from :func:`interpret_response`.
    """
    parsed = interpret_response(status, headers, body, path=path, redact=redact)
    with _answer_context(path=path, status=status, headers=headers, redact=redact):
        return build(parsed)


def check_page(page: TransactionPage, *, limit: int, offset: int, redact: Callable[[str], str]) -> TransactionPage:
    """``page`` if it is the page asked for with ``limit``/``offset``, else a LocalLeadsResponseError.

    ``meta.offset`` must equal the offset sent (a proxy or cache that drops the query string would
    otherwise make a listing loop or repeat), no more items than the limit sent, newest first, and
    no id twice (refused rather than de-duplicated: a page that contradicts itself cannot be paged
    exactly once). ``meta.total`` is taken as the API's estimate; a total smaller than the page is
    accepted (totals and pages may be counted at different moments); the listing trusts it only
    when it agrees exactly with a page. Call it inside :func:`parse_answer`'s ``build``, where its
    errors get the HTTP context.
    """
    problem = _page_problem(page, limit=limit, offset=offset, redact=redact)
    if problem is not None:
        raise LocalLeadsResponseError(
            f"Unexpected response from the LocalLeads API: {problem}. Check the host in the connection; "
            "if it is right, report this to LocalLeads with the request id",
        )
    return page


def _page_problem(page: TransactionPage, *, limit: int, offset: int, redact: Callable[[str], str]) -> str | None:
    """What makes ``page`` not the page asked for, or None."""
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
