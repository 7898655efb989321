"""Unit tests for judging one HTTP answer (``_responses.py``); the error classes are in test_exceptions.py."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from loopback_support import BALANCE_BODY, BALANCE_DATA

from airflow_provider_localleads.client.responses import parse_answer, request_id_from
from airflow_provider_localleads.client.values import excerpt
from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsError,
    LocalLeadsRateLimitError,
    LocalLeadsRequestError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.models import CreditBalance, OversizedInteger

KEY = "sk_canary_9f8e7d"
PATH = "/api/v1/credits/balance"
GOOD_BODY = BALANCE_BODY
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad Gateway</h1></body></html>"
)


def redact(text: str) -> str:
    return text.replace(KEY, "***")


def interpret(status: int, body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The answer's JSON object (``build=dict``: no model), or the error the status or body deserves."""
    return parse_answer(status, headers or {}, body, path=PATH, redact=redact, build=dict)


def outcome_of(status: int, body: bytes) -> dict[str, Any] | LocalLeadsError:
    """The parsed answer, or the LocalLeadsError raised; any other exception propagates and fails the test."""
    try:
        return interpret(status, body)
    except LocalLeadsError as err:
        return err


def error_of(status: int, body: bytes, headers: dict[str, str] | None = None) -> LocalLeadsError:
    with pytest.raises(LocalLeadsError) as info:
        interpret(status, body, headers)
    return info.value


# ---------------------------------------------------------------------------------------------
# 2xx
# ---------------------------------------------------------------------------------------------


def test_good_json_is_returned_as_a_dict() -> None:
    parsed = interpret(200, GOOD_BODY)
    assert parsed == json.loads(GOOD_BODY)


def test_html_page_with_200_is_a_response_error_mentioning_html() -> None:
    err = error_of(200, HTML_PAGE)
    assert type(err) is LocalLeadsResponseError
    assert "HTML" in str(err)
    assert "Bad Gateway" in str(err)  # an excerpt helps to recognise the proxy
    assert "<html>" not in str(err)  # tags are dropped
    assert err.transient is False


@pytest.mark.parametrize("body", [b"", b"   \n"], ids=["empty", "whitespace"])
def test_empty_body_with_200_is_a_response_error(body: bytes) -> None:
    err = error_of(200, body)
    assert type(err) is LocalLeadsResponseError
    assert "empty body" in str(err)


def test_truncated_json_with_200_is_a_response_error() -> None:
    err = error_of(200, b'{"success": tr')
    assert type(err) is LocalLeadsResponseError
    assert "not JSON" in str(err)


@pytest.mark.parametrize(("body", "kind"), [(b"[1, 2]", "list"), (b'"ok"', "str"), (b"42", "int"), (b"true", "bool")])
def test_top_level_non_object_is_a_response_error(body: bytes, kind: str) -> None:
    err = error_of(200, body)
    assert type(err) is LocalLeadsResponseError
    assert f"JSON {kind}" in str(err)


def test_top_level_null_is_a_response_error() -> None:
    assert type(error_of(200, b"null")) is LocalLeadsResponseError


def test_success_false_with_string_error_quotes_the_server() -> None:
    err = error_of(200, b'{"success": false, "error": "Organisation suspended"}')
    assert type(err) is LocalLeadsResponseError
    assert "Organisation suspended" in str(err)


def test_success_false_with_object_error_quotes_code_and_message() -> None:
    err = error_of(200, b'{"success": false, "error": {"code": "X", "message": "Y"}}')
    assert type(err) is LocalLeadsResponseError
    assert "X: Y" in str(err)


def test_success_false_with_object_error_without_code_or_message_quotes_the_object() -> None:
    err = error_of(200, b'{"success": false, "error": {"detail": "quota frozen"}}')
    assert "quota frozen" in str(err)


def test_success_false_without_error_field_is_a_response_error() -> None:
    err = error_of(200, b'{"success": false}')
    assert type(err) is LocalLeadsResponseError
    assert "reported a failure" in str(err)


@pytest.mark.parametrize(
    "body",
    [b'{"data": {}}', b'{"success": "true", "data": {}}', b'{"success": 1, "data": {}}', b"{}"],
    ids=["missing", "string", "int", "empty-object"],
)
def test_success_field_missing_or_not_boolean_is_a_response_error(body: bytes) -> None:
    err = error_of(200, body)
    assert type(err) is LocalLeadsResponseError
    assert "'success'" in str(err)


@pytest.mark.parametrize("status", [201, 204])
def test_other_2xx_are_judged_by_body(status: int) -> None:
    assert interpret(status, GOOD_BODY)["success"] is True


# ---------------------------------------------------------------------------------------------
# error statuses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "word"), [(401, "unauthorised"), (403, "forbidden")])
def test_401_and_403_are_authentication_errors_that_fail_the_task(status: int, word: str) -> None:
    err = error_of(status, b'{"success": false, "error": "Invalid API key"}')
    assert type(err) is LocalLeadsAuthenticationError
    assert isinstance(err, AirflowFailException)
    assert err.transient is False
    assert err.http_status == status
    assert word in str(err)
    assert "Invalid API key" in str(err)
    assert "LOCALLEADS_API_KEY" in str(err)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "17"}, 17.0),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_429_is_a_rate_limit_error_carrying_retry_after(headers: dict[str, str], expected: float | None) -> None:
    err = error_of(429, b'{"success": false, "error": "Too many requests"}', headers)
    assert type(err) is LocalLeadsRateLimitError
    assert err.transient is True
    assert err.retry_after == expected
    assert "Too many requests" in str(err)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"success": false, "error": "Internal error"}'),
        (502, HTML_PAGE),
        (503, b"Service Unavailable"),
        (504, b""),
        (408, b"Request Timeout"),
        (599, b"x"),
    ],
)
def test_5xx_and_408_are_transient_server_errors(status: int, body: bytes) -> None:
    err = error_of(status, body)
    assert type(err) is LocalLeadsServerError
    assert err.transient is True
    assert err.http_status == status


def test_503_with_retry_after_carries_it() -> None:
    assert error_of(503, b"", {"Retry-After": "9"}).retry_after == 9.0


def test_502_html_page_is_quoted_without_tags() -> None:
    message = str(error_of(502, HTML_PAGE))
    assert "Bad Gateway" in message
    assert "<" not in message.split("[")[0]


@pytest.mark.parametrize("status", [400, 404, 405, 409, 422])
def test_other_4xx_are_permanent_request_errors(status: int) -> None:
    err = error_of(status, b'{"success": false, "error": {"code": "BAD_LIMIT", "message": "limit must be <= 100"}}')
    assert type(err) is LocalLeadsRequestError
    assert err.transient is False
    assert "BAD_LIMIT: limit must be <= 100" in str(err)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_a_response_error_naming_the_location(status: int) -> None:
    err = error_of(status, b"", {"Location": "https://login.example.com/sso"})
    assert type(err) is LocalLeadsResponseError
    assert "redirect" in str(err)
    assert "https://login.example.com/sso" in str(err)


def test_redirect_without_location_is_still_a_response_error() -> None:
    assert "redirect" in str(error_of(302, b""))


# ---------------------------------------------------------------------------------------------
# hostile or odd bodies: parsed, or a LocalLeadsResponseError, never another exception
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"success": true, "data": {"availableCredits": NaN}}', id="nan"),
        pytest.param(b'{"success": true, "data": {"availableCredits": Infinity}}', id="infinity"),
        pytest.param(b'{"success": true, "data": {"availableCredits": -Infinity}}', id="minus-infinity"),
        pytest.param(b'{"success": true, "data": {"availableCredits": 1e400}}', id="float-overflow"),
        pytest.param(b'{"success": true, "data": {"availableCredits": ' + b"9" * 5000 + b"}}", id="5000-digit-int"),
        pytest.param(b'\xef\xbb\xbf{"success": true, "data": {}}', id="utf8-bom"),
        pytest.param(b'{"success": true, "data": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"\xff\xfe{\x00}\x00", id="utf16-bom"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(b'{"success": true, "data": {}}\x00', id="trailing-nul"),
        pytest.param(b'{"success": true}{"success": false}', id="two-documents"),
        pytest.param(b"\x00" * 1000, id="nul-bytes"),
    ],
)
@pytest.mark.parametrize("status", [200, 401, 429, 500, 400])
def test_odd_bodies_never_raise_anything_but_localleads_errors(body: bytes, status: int) -> None:
    outcome = outcome_of(status, body)
    if status == 200:
        assert isinstance(outcome, dict | LocalLeadsResponseError)
    else:
        assert isinstance(outcome, LocalLeadsError)
    if isinstance(outcome, dict):
        assert outcome["success"] is True
    else:
        assert len(str(outcome)) < 2_000


def test_nan_and_infinity_are_refused() -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        err = error_of(200, b'{"success": true, "data": {"availableCredits": ' + literal + b"}}")
        assert type(err) is LocalLeadsResponseError


def test_utf8_bom_is_tolerated() -> None:
    assert interpret(200, b'\xef\xbb\xbf{"success": true, "data": {}}') == {"success": True, "data": {}}


def test_5000_digit_number_is_refused_by_the_field_that_holds_it() -> None:
    # Valid JSON (longer than Python's 4,300-digit conversion limit): not "a body that is not JSON".
    body = json.dumps({"success": True, "data": {**BALANCE_DATA, "availableCredits": 0}}).encode()
    body = body.replace(b'"availableCredits": 0', b'"availableCredits": ' + b"9" * 5000)
    assert isinstance(interpret(200, body)["data"]["availableCredits"], OversizedInteger)
    with pytest.raises(LocalLeadsResponseError) as info:
        parse_answer(200, {"X-Request-Id": "req-7"}, body, path=PATH, redact=redact, build=CreditBalance.from_response)
    message = str(info.value)
    assert "data.availableCredits is out of range: <an integer of 5000 digits>" in message
    assert "not JSON" not in message
    assert "proxy, captive portal" not in message
    assert info.value.http_status == 200
    assert info.value.request_id == "req-7"


# ---------------------------------------------------------------------------------------------
# what an error message carries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Request-Id", "x-request-id", "Request-Id", "CF-Ray"])
def test_request_id_is_taken_from_headers_and_quoted(header: str) -> None:
    err = error_of(500, b"boom", {header: "req-7a8b"})
    assert err.request_id == "req-7a8b"
    assert "request id req-7a8b" in str(err)


def test_request_id_prefers_x_request_id_and_is_bounded() -> None:
    assert request_id_from({"CF-Ray": "ray", "X-Request-Id": "xid"}) == "xid"
    assert request_id_from({"X-Request-Id": "r" * 500}) == "r" * 100
    assert request_id_from({"X-Request-Id": ""}) is None
    assert request_id_from({}) is None


@pytest.mark.parametrize("status", [200, 302, 400, 401, 429, 503])
def test_status_and_path_are_in_every_error(status: int) -> None:
    body = b'{"success": false, "error": "nope"}' if status == 200 else b"nope"
    err = error_of(status, body, {"X-Request-Id": "rid-1"})
    message = str(err)
    assert f"HTTP {status}" in message
    assert f"GET {PATH}" in message
    assert err.path == PATH
    assert err.http_status == status


def test_long_server_message_is_shortened_to_one_line() -> None:
    body = json.dumps({"success": False, "error": "line one\n\n\tline two " + "z" * 5000}).encode()
    message = str(error_of(400, body))
    assert "line one line two" in message
    assert "\n" not in message
    assert len(message) < 800


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        pytest.param(401, f"Invalid API key {KEY}".encode(), {}, id="401-text"),
        pytest.param(401, json.dumps({"success": False, "error": f"key {KEY} revoked"}).encode(), {}, id="401-json"),
        pytest.param(
            403,
            json.dumps({"success": False, "error": {"code": "FORBIDDEN", "message": f"key {KEY}"}}).encode(),
            {},
            id="403-object",
        ),
        pytest.param(200, json.dumps({"success": False, "error": f"bad key {KEY}"}).encode(), {}, id="200-failure"),
        pytest.param(200, f"<html><body>Bearer {KEY}</body></html>".encode(), {}, id="200-html"),
        pytest.param(500, f"Traceback: Authorization: Bearer {KEY}".encode(), {}, id="500-traceback"),
        pytest.param(302, b"", {"Location": f"https://evil.example.com/?k={KEY}"}, id="302-location"),
        pytest.param(
            400,
            json.dumps({"success": False, "error": {"detail": f"key={KEY}"}}).encode(),
            {},
            id="400-object-without-message",
        ),
    ],
)
def test_api_key_echoed_by_the_server_is_redacted(status: int, body: bytes, headers: dict[str, str]) -> None:
    err = error_of(status, body, headers)
    assert KEY not in str(err)
    assert KEY not in repr(err)
    assert "***" in str(err)


@pytest.mark.parametrize("prefix_len", [186, 188, 191])
def test_api_key_cut_by_the_excerpt_limit_does_not_leak(prefix_len: int) -> None:
    # The excerpt keeps 197 characters then "...": these bodies cut the key after 6 to 11 characters.
    body = ("x" * prefix_len + KEY + " and more").encode()
    err = error_of(401, body)
    assert KEY[:6] not in str(err)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(401, (" " * 1994 + KEY).encode(), id="error-status-body-cut-at-2000-bytes"),
        pytest.param(200, (" " * 494 + KEY).encode(), id="non-json-2xx-cut-at-500-bytes"),
        pytest.param(200, (" <b>" * 123 + KEY).encode(), id="html-2xx-cut-at-500-bytes"),
        pytest.param(
            400,
            json.dumps({"success": False, "error": {"detail": " " * 380 + KEY}}).encode(),
            id="error-object-cut-at-400-chars",
        ),
    ],
)
def test_api_key_cut_by_a_raw_slice_before_collapsing_does_not_leak(status: int, body: bytes) -> None:
    err = error_of(status, body)
    assert KEY[:6] not in str(err)


def test_excerpt_drops_tags_collapses_whitespace_and_redacts() -> None:
    assert excerpt("<p>Hello\n\n   <b>world</b> " + KEY + "</p>", redact) == "Hello world ***"
    assert excerpt("a" * 500, redact, limit=10) == "aaaaaaa..."


def test_status_errors_survive_pickling() -> None:
    err = error_of(429, b'{"success": false, "error": "slow down"}', {"Retry-After": "4", "X-Request-Id": "r9"})
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is LocalLeadsRateLimitError
    assert str(clone) == str(err)
    assert clone.retry_after == 4.0
    assert clone.request_id == "r9"


@pytest.mark.parametrize("status", [429, 503])
def test_odd_retry_after_header_never_raises_anything_but_localleads_errors(status: int) -> None:
    with pytest.raises(LocalLeadsError):
        interpret(status, b"", {"Retry-After": "\u00b2"})
