"""Promise 3: whatever bytes come back, the hook returns a valid model or raises a LocalLeadsError.

"The full path the hook uses" is ``_responses.parse_answer`` with the endpoint's model builder:
status + headers + body bytes -> ``parse_answer`` -> model parsing -> page checks. Those are
fed arbitrary bytes, arbitrary JSON and near-valid documents (each field valid or arbitrary), and
a fixed corpus of known-bad answers. A valid model must also be usable: ``to_dict()`` is strict
JSON and encodes as UTF-8, ``summary()`` works. An error must be printable, UTF-8 encodable and
picklable. A handful of corpus answers also go over a real socket through the sync and async hook.

Decisions recorded by the corpus: the Content-Type is not trusted either way (the body is judged);
extra fields are accepted; ``"10"``, ``true``, ``1.5``, ``1e400`` are not integers; a BOM is
tolerated; NUL is kept; lone surrogates become U+FFFD; NaN/Infinity are not JSON; a 5,000-digit
integer is JSON, refused by the field that holds it; ``meta.total`` smaller than the page is
accepted (the listing does not rely on it); duplicate ids in one page are refused.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback_support import BALANCE_DATA, ConnSetter, RawFactory, answer_every_request, response_bytes
from reliability_support import call

from airflow_provider_localleads.client.responses import check_page, parse_answer
from airflow_provider_localleads.exceptions import (
    LocalLeadsError,
    LocalLeadsRequestError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance, TransactionPage

BALANCE = "/api/v1/credits/balance"
PAGE = "/api/v1/credits/transactions"
KEY = "llk_live_MALFORMED_CANARY_31337"
SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def redact(text: str) -> str:
    return text.replace(KEY, "***")


def good_balance(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(BALANCE_DATA)
    data.update(changes)
    return data


def good_txn(i: int = 0, **changes: Any) -> dict[str, Any]:
    txn: dict[str, Any] = {
        "id": f"txn_{i:06d}",
        "type": "DEDUCTION",
        "amount": -8,
        "description": "Lead search: Dentists in Austin, TX (97 results)",
        "createdAt": f"2026-05-{20 - i:02d}T10:00:00.000Z",
    }
    txn.update(changes)
    return txn


def body_of(data: Any, meta: Any = None, **top: Any) -> bytes:
    doc: dict[str, Any] = {"success": True, "data": data}
    if meta is not None:
        doc["meta"] = meta
    doc.update(top)
    return json.dumps(doc).encode()


def page_body(items: list[Any], **meta: Any) -> bytes:
    m: dict[str, Any] = {"total": len(items), "limit": 10, "offset": 0}
    m.update(meta)
    return body_of(items, m)


def outcome(kind: str, status: int, body: bytes, headers: dict[str, str] | None = None, **page_args: Any) -> Any:
    """Parse through the hook's full path; return the model or the LocalLeadsError. Anything else fails."""
    headers = headers or {}
    error: LocalLeadsError | None = None
    try:
        if kind == "balance":
            result: Any = parse_answer(
                status, headers, body, path=BALANCE, redact=redact, build=CreditBalance.from_response
            )
        else:
            args = {"limit": 10, "offset": 0, **page_args}

            def build(answer: Any) -> TransactionPage:  # what LocalLeadsHook.list_transactions builds
                return check_page(TransactionPage.from_response(answer), redact=redact, **args)

            result = parse_answer(status, headers, body, path=PAGE, redact=redact, build=build)
    except LocalLeadsError as err:
        error = err
    if error is not None:
        text = str(error)
        text.encode("utf-8")  # printable in any log handler
        assert KEY not in text
        assert error.http_status == status
        clone = pickle.loads(pickle.dumps(error))
        assert str(clone) == text
        return error
    if kind == "balance":
        assert isinstance(result, CreditBalance)
        result.summary()
        json.dumps(result.to_dict(), allow_nan=False).encode("utf-8")
    else:
        assert isinstance(result, TransactionPage)
        json.dumps(result.to_dict(), allow_nan=False).encode("utf-8")
        assert len({t.id for t in result.items}) == len(result.items)
    return result


# ------------------------------------------------------------------------------------ properties

STATUSES = st.one_of(
    st.sampled_from([200, 200, 200, 201, 204, 400, 401, 404, 408, 429, 502, 503]), st.integers(100, 599)
)
HEADERS = st.dictionaries(
    st.sampled_from(["Retry-After", "X-Request-Id", "Content-Type", "Content-Length", "Location", "CF-Ray"]),
    st.text(max_size=40),
    max_size=3,
)
KINDS = st.sampled_from(["balance", "page"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
TIMESTAMPS = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?\Z"
    ),
    st.text(max_size=30),
)


def maybe(valid: Any, arbitrary: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value (so that the deeper checks are reached), sometimes anything."""
    return st.one_of(*[st.just(valid)] * 5, arbitrary)


def dropping(doc: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """``doc`` with up to two of its keys sometimes left out (missing fields)."""
    return st.tuples(doc, st.lists(st.integers(0, 7), max_size=2)).map(
        lambda pair: {k: v for i, (k, v) in enumerate(pair[0].items()) if i not in pair[1]}
    )


INTS = st.one_of(st.integers(), st.integers(-5, 200), JSON)
NEAR_BALANCE = dropping(
    st.fixed_dictionaries(
        {
            "monthlyCredits": maybe(100, INTS),
            "bonusCredits": maybe(25, INTS),
            "usedCredits": maybe(43, INTS),
            "availableCredits": maybe(82, INTS),
            "resetDay": maybe(1, st.one_of(st.integers(-2, 40), JSON)),
            "lastResetAt": maybe("2026-05-01T00:00:00.000Z", st.one_of(TIMESTAMPS, JSON)),
        },
        optional={"extra": JSON},
    )
)
NEAR_TXN = dropping(
    st.fixed_dictionaries(
        {
            "id": maybe("txn_1", st.one_of(st.sampled_from(["txn_1", "txn_2", "txn_3"]), st.text(max_size=8), JSON)),
            "type": maybe("DEDUCTION", st.one_of(st.text(max_size=10), JSON)),
            "amount": maybe(-8, INTS),
            "description": maybe("x", st.one_of(st.text(max_size=30), JSON)),
            "createdAt": maybe("2026-05-20T10:00:00.000Z", st.one_of(TIMESTAMPS, JSON)),
        },
        optional={"note": JSON},
    )
)
NEAR_META = st.fixed_dictionaries(
    {"total": maybe(3, INTS), "limit": maybe(10, INTS), "offset": maybe(0, INTS)}, optional={"next": JSON}
)


@SETTINGS
@given(kind=KINDS, status=STATUSES, headers=HEADERS, body=st.binary(max_size=600))
def test_arbitrary_bytes(kind: str, status: int, headers: dict[str, str], body: bytes) -> None:
    outcome(kind, status, body, headers)


@SETTINGS
@given(kind=KINDS, status=STATUSES, doc=JSON, ascii_only=st.booleans())
def test_arbitrary_json(kind: str, status: int, doc: Any, ascii_only: bool) -> None:
    outcome(kind, status, json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@SETTINGS
@given(
    doc=st.fixed_dictionaries(
        {"success": maybe(True, JSON), "data": maybe(good_balance(), st.one_of(NEAR_BALANCE, JSON))},
        optional={"error": JSON, "meta": JSON},
    ),
    status=st.sampled_from([200, 200, 200, 503]),
)
def test_near_valid_balances(doc: dict[str, Any], status: int) -> None:
    outcome("balance", status, json.dumps(doc).encode("utf-8", "surrogatepass"))


@SETTINGS
@given(
    items=st.one_of(st.lists(NEAR_TXN, max_size=4), st.lists(NEAR_TXN, max_size=4), JSON),
    meta=st.one_of(NEAR_META, NEAR_META, NEAR_META, JSON),
    limit=st.integers(1, 100),
    offset=st.sampled_from([0, 0, 3, 10]),
)
def test_near_valid_pages(items: Any, meta: Any, limit: int, offset: int) -> None:
    result = outcome("page", 200, body_of(items, meta), limit=limit, offset=offset)
    if isinstance(result, TransactionPage):
        assert result.offset == offset
        assert len(result.items) <= limit
        assert [t.created_at for t in result.items] == sorted((t.created_at for t in result.items), reverse=True)


# ------------------------------------------------------------------------------------ fixed corpus

BAD = LocalLeadsResponseError
CORPUS: list[tuple[str, str, int, bytes, dict[str, str], Any, str]] = [
    # id, kind, status, body, headers, expected (model class or error class), phrase
    ("open-brace", "balance", 200, b"{", {}, BAD, "not JSON"),
    ("empty", "balance", 200, b"", {}, BAD, "an empty body"),
    ("whitespace", "page", 200, b"  \r\n ", {}, BAD, "an empty body"),
    ("html-200", "balance", 200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html"}, BAD, "HTML"),
    ("html-502", "balance", 502, b"<html><h1>Bad Gateway</h1></html>", {}, LocalLeadsServerError, "Bad Gateway"),
    ("json-as-text-html", "balance", 200, body_of(good_balance()), {"Content-Type": "text/html"}, CreditBalance, ""),
    ("html-as-json", "balance", 200, b"<!doctype html><p>x</p>", {"Content-Type": "application/json"}, BAD, "HTML"),
    ("success-false-str", "balance", 200, b'{"success": false, "error": "quota"}', {}, BAD, "quota"),
    (
        "success-false-obj",
        "page",
        200,
        b'{"success": false, "error": {"code": "E1", "message": "boom"}}',
        {},
        BAD,
        "E1: boom",
    ),
    ("success-missing", "balance", 200, b'{"data": {}}', {}, BAD, "no boolean 'success'"),
    ("success-string", "balance", 200, b'{"success": "true", "data": {}}', {}, BAD, "no boolean 'success'"),
    ("data-null-balance", "balance", 200, body_of(None), {}, BAD, "data must be a JSON object"),
    ("data-null-page", "page", 200, body_of(None, {"total": 0, "limit": 10, "offset": 0}), {}, BAD, "JSON array"),
    ("top-level-array", "balance", 200, b"[1, 2]", {}, BAD, "JSON list"),
    ("missing-field", "balance", 200, body_of({**good_balance(), "availableCredits": None}), {}, BAD, "integer"),
    (
        "absent-field",
        "balance",
        200,
        body_of({k: v for k, v in good_balance().items() if k != "resetDay"}),
        {},
        BAD,
        "data.resetDay is missing",
    ),
    ("meta-missing", "page", 200, body_of([good_txn()]), {}, BAD, "meta must be a JSON object"),
    ("extra-fields", "balance", 200, body_of({**good_balance(), "plan": "pro"}, version=2), {}, CreditBalance, ""),
    ("extra-txn-fields", "page", 200, page_body([good_txn(tags=["a"])], cursor="x"), {}, TransactionPage, ""),
    ("string-int", "balance", 200, body_of(good_balance(monthlyCredits="10")), {}, BAD, "monthlyCredits must be"),
    ("bool-int", "balance", 200, body_of(good_balance(usedCredits=True)), {}, BAD, "usedCredits must be"),
    ("float-int", "balance", 200, body_of(good_balance(availableCredits=1.5)), {}, BAD, "availableCredits must be"),
    ("float-whole", "page", 200, page_body([good_txn(amount=-8.0)]), {}, BAD, "amount must be an integer"),
    ("negative-monthly", "balance", 200, body_of(good_balance(monthlyCredits=-1)), {}, BAD, "must be >= 0"),
    ("overdrawn", "balance", 200, body_of(good_balance(availableCredits=-18)), {}, CreditBalance, ""),
    ("reset-day-32", "balance", 200, body_of(good_balance(resetDay=32)), {}, BAD, "resetDay must be <= 31"),
    ("nan", "balance", 200, b'{"success": true, "data": {"monthlyCredits": NaN}}', {}, BAD, "not JSON"),
    ("infinity", "balance", 200, b'{"success": true, "data": {"monthlyCredits": Infinity}}', {}, BAD, "not JSON"),
    ("minus-infinity", "page", 200, b'{"success": true, "data": [], "meta": {"total": -Infinity}}', {}, BAD, "JSON"),
    (
        "1e400",
        "balance",
        200,
        b'{"success": true, "data": {"monthlyCredits": 1e400, "bonusCredits": 0, "usedCredits": 0, '
        b'"availableCredits": 0, "resetDay": 1, "lastResetAt": "2026-05-01T00:00:00Z"}}',
        {},
        BAD,
        "must be an integer",
    ),
    (
        "5000-digits",
        "balance",
        200,
        b'{"success": true, "data": {"monthlyCredits": ' + b"9" * 5000 + b"}}",
        {},
        BAD,
        "data.monthlyCredits is out of range: <an integer of 5000 digits>",
    ),
    ("bom", "balance", 200, b"\xef\xbb\xbf" + body_of(good_balance()), {}, CreditBalance, ""),
    ("latin-1", "balance", 200, body_of(good_balance()).replace(b'"success"', b'"success\xe9"'), {}, BAD, "not JSON"),
    ("deep-nesting", "balance", 200, b"[" * 100_000 + b"]" * 100_000, {}, BAD, "not JSON"),
    ("nul-description", "page", 200, page_body([good_txn(description="a\x00b")]), {}, TransactionPage, ""),
    (
        "lone-surrogate",
        "page",
        200,
        page_body([good_txn(description="x")]).replace(b'"x"', b'"\\ud800 \\udfff"'),
        {},
        TransactionPage,
        "",
    ),
    ("ts-no-zone", "page", 200, page_body([good_txn(createdAt="2026-05-20T10:00:00")]), {}, BAD, "no time zone"),
    ("ts-not-a-date", "page", 200, page_body([good_txn(createdAt="yesterday")]), {}, BAD, "ISO 8601"),
    ("ts-number", "balance", 200, body_of(good_balance(lastResetAt=1714521600)), {}, BAD, "must be a string"),
    ("ts-year-1", "balance", 200, body_of(good_balance(lastResetAt="0001-01-01T00:00:00+01:00")), {}, BAD, "range"),
    ("ts-year-9999", "page", 200, page_body([good_txn(createdAt="9999-12-31T23:00:00-05:00")]), {}, BAD, "range"),
    ("ts-end-of-calendar", "balance", 200, body_of(good_balance(lastResetAt="9999-12-31T00:00:00Z")), {}, BAD, "end"),
    ("total-smaller-than-page", "page", 200, page_body([good_txn(0), good_txn(1)], total=1), {}, TransactionPage, ""),
    ("more-than-limit", "page", 200, page_body([good_txn(i) for i in range(11)], limit=11), {}, BAD, "limit=10"),
    ("offset-ignored", "page", 200, page_body([good_txn()], offset=50), {}, BAD, "meta.offset is 50"),
    ("duplicate-ids", "page", 200, page_body([good_txn(0), good_txn(1, id="txn_000000")]), {}, BAD, "twice"),
    ("out-of-order", "page", 200, page_body([good_txn(1), good_txn(0)]), {}, BAD, "out of order"),
    ("empty-id", "page", 200, page_body([good_txn(id="")]), {}, BAD, "must not be empty"),
    ("404-html", "balance", 404, b"<h1>Not Found</h1>", {}, LocalLeadsRequestError, "Not Found"),
]


@pytest.mark.parametrize(
    ("kind", "status", "body", "headers", "expected", "phrase"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_corpus(kind: str, status: int, body: bytes, headers: dict[str, str], expected: type, phrase: str) -> None:
    result = outcome(kind, status, body, {"X-Request-Id": "req-corpus", **headers})
    assert type(result) is expected, f"{type(result).__name__}: {result}"
    if isinstance(result, LocalLeadsError):
        assert phrase in str(result)
        assert result.request_id == "req-corpus"  # field errors carry it too
        assert f"HTTP {status}" in str(result)


def test_nul_is_kept_and_lone_surrogates_are_replaced() -> None:
    nul = outcome("page", 200, page_body([good_txn(description="a\x00b")]))
    assert nul.items[0].description == "a\x00b"
    body = page_body([good_txn(description="x")]).replace(b'"x"', b'"\\ud800 ok \\udfff \\ud83d\\ude00"')
    fixed = outcome("page", 200, body)
    assert fixed.items[0].description == "\ufffd ok \ufffd \U0001f600"  # a real pair stays one character


# ------------------------------------------------------------------------------ over the wire, both paths

WIRE = ["open-brace", "empty", "html-200", "html-502", "json-as-text-html", "string-int", "bom", "nan", "overdrawn"]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case", WIRE)
def test_the_hook_takes_the_same_path(raw_server: RawFactory, set_conn: ConnSetter, mode: str, case: str) -> None:
    _, kind, status, body, headers, expected, phrase = next(c for c in CORPUS if c[0] == case)
    assert kind == "balance"
    content_type = headers.get("Content-Type", "application/json")
    server = raw_server(answer_every_request(response_bytes(status, body, reason="X", content_type=content_type)))
    set_conn("rel_wire", host=server.url, password=KEY, max_retries=0)
    hook = LocalLeadsHook("rel_wire")
    try:
        result: Any = call(hook, mode)
    except LocalLeadsError as err:
        result = err
    finally:
        hook.close()
    assert type(result) is expected
    if isinstance(result, LocalLeadsError):
        assert phrase in str(result)
