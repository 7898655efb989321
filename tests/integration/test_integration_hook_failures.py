"""LocalLeadsHook when things go wrong: HTTP errors and retries, timeouts, broken connections, bad bodies."""

from __future__ import annotations

import re
import socket
import time

import pytest
from loopback_support import (
    BALANCE_BODY,
    BALANCE_PATH,
    TRANSACTIONS_PATH,
    ConnSetter,
    HookFactory,
    RawFactory,
    RawServer,
    answer_every_request,
    closed_port,
    response_bytes,
)

from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsConnectionError,
    LocalLeadsError,
    LocalLeadsRateLimitError,
    LocalLeadsRequestError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.sandbox import MALFORMED_KINDS, SandboxServer

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>"
    "\r\n<hr><center>nginx/1.25.3</center>\r\n</body>\r\n</html>\r\n"
)


# ------------------------------------------------------------------------------------------------ retries


def test_503_twice_then_success(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.fail_next(503, times=2)
    balance = sandbox_hook.get_balance()
    assert balance.available_credits == 82
    assert localleads_sandbox.request_count(BALANCE_PATH) == 3
    assert [r.status for r in localleads_sandbox.requests] == [503, 503, 200]


def test_500_on_every_attempt_gives_server_error_after_max_retries(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_500", host=localleads_sandbox.url, password=localleads_sandbox.api_key)
    localleads_sandbox.fail_next(500, times=3)
    with pytest.raises(LocalLeadsServerError) as info:
        make_hook("ll_500", max_retries=2).get_balance()
    assert localleads_sandbox.request_count(BALANCE_PATH) == 3
    assert info.value.http_status == 500
    assert info.value.transient
    assert "HTTP 500" in str(info.value)
    assert BALANCE_PATH in str(info.value)
    assert info.value.request_id == localleads_sandbox.requests[-1].request_id


@pytest.mark.parametrize(("extra_value", "expected_requests"), [(0, 1), ("1", 2), (3, 4)])
def test_max_retries_comes_from_the_connection_extra(
    localleads_sandbox: SandboxServer,
    set_conn: ConnSetter,
    make_hook: HookFactory,
    extra_value: object,
    expected_requests: int,
) -> None:
    set_conn("ll_retries", host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=extra_value)
    localleads_sandbox.fail_next(503, times=None)  # every request
    with pytest.raises(LocalLeadsServerError):
        make_hook("ll_retries").get_balance()
    assert localleads_sandbox.request_count(BALANCE_PATH) == expected_requests


def test_hook_argument_overrides_max_retries_extra(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_override", host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=5)
    localleads_sandbox.fail_next(503, times=None)
    with pytest.raises(LocalLeadsServerError):
        make_hook("ll_override", max_retries=0).get_balance()
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_429_retry_after_is_honoured(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.rate_limit_next(retry_after="1")
    started = time.monotonic()
    balance = sandbox_hook.get_balance()
    elapsed = time.monotonic() - started
    assert balance.available_credits == 82
    # The policy's own backoff is at most 0.02 s here: only Retry-After explains a 1 s wait (a lower
    # bound: load only adds time). At most 5x the 1 s the README says is waited, for a loaded CI machine.
    assert elapsed >= 0.95
    assert elapsed < 5
    assert [r.status for r in localleads_sandbox.requests] == [429, 200]


def test_429_with_unusable_retry_after_falls_back_to_backoff(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.rate_limit_next(retry_after="soon-ish")
    started = time.monotonic()
    assert sandbox_hook.get_balance().available_credits == 82
    # The README: an unusable value falls back to the backoff (0.02 s here), not to the 120 s cap.
    # 5 s: far above 5x that backoff plus two loopback requests, far below any Retry-After wait.
    assert time.monotonic() - started < 5
    assert localleads_sandbox.request_count(BALANCE_PATH) == 2


def test_429_until_retries_run_out(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.rate_limit_next(retry_after="0", times=None)
    with pytest.raises(LocalLeadsRateLimitError) as info:
        sandbox_hook.get_balance()
    assert localleads_sandbox.request_count(BALANCE_PATH) == 3
    assert info.value.http_status == 429


def test_retry_after_beyond_the_cap_fails_at_once(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.rate_limit_next(retry_after="121", times=None)
    started = time.monotonic()
    with pytest.raises(LocalLeadsRateLimitError) as info:
        sandbox_hook.get_balance()
    # The README: fails at once instead of waiting 121 s; 5 s is room for a loaded CI machine.
    assert time.monotonic() - started < 5
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert info.value.retry_after == 121
    assert "121" in str(info.value)
    assert info.value.http_status == 429
    assert BALANCE_PATH in str(info.value)


def test_408_is_retried(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook) -> None:
    localleads_sandbox.fail_next(408)
    assert sandbox_hook.get_balance().available_credits == 82
    assert [r.status for r in localleads_sandbox.requests] == [408, 200]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, LocalLeadsRequestError),
        (401, LocalLeadsAuthenticationError),
        (403, LocalLeadsAuthenticationError),
        (404, LocalLeadsRequestError),
    ],
)
def test_client_errors_are_not_retried(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, status: int, error_class: type[LocalLeadsError]
) -> None:
    localleads_sandbox.fail_next(status, times=5)
    with pytest.raises(error_class) as info:
        sandbox_hook.get_balance()
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert info.value.http_status == status
    assert f"HTTP {status}" in str(info.value)
    assert not info.value.transient


def test_real_401_from_wrong_key_is_not_retried(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_bad_key", host=localleads_sandbox.url, password="wrong-key-123")
    with pytest.raises(LocalLeadsAuthenticationError) as info:
        make_hook("ll_bad_key").get_balance()
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert localleads_sandbox.requests[0].auth_valid is False
    assert "UNAUTHORIZED" in str(info.value)
    assert "wrong-key-123" not in str(info.value)


def test_502_html_page_gives_a_tag_free_excerpt(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.fail_next(502, times=3, body=NGINX_502, content_type="text/html")
    with pytest.raises(LocalLeadsServerError) as info:
        sandbox_hook.get_balance()
    message = str(info.value)
    assert localleads_sandbox.request_count(BALANCE_PATH) == 3
    assert "502 Bad Gateway" in message
    assert "nginx/1.25.3" in message
    assert not re.search(r"<[^>]*>", message), message
    assert "\n" not in message
    assert "HTTP 502" in message
    assert len(message) < 1000


# --------------------------------------------------------------------------------- timeouts and network


def _never_answers(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    server.wait_forever()


def test_server_that_never_answers_times_out(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(_never_answers)
    set_conn("ll_silent", host=server.url, password="k-silent", max_retries=0)
    started = time.monotonic()
    with pytest.raises(LocalLeadsConnectionError) as info:
        make_hook("ll_silent", timeout=0.5).get_balance()
    # The README promises connect + read timeout (1 s here); 5x for a loaded CI machine.
    assert time.monotonic() - started < 5
    assert server.accepted == 1
    assert "did not answer" in str(info.value)
    assert info.value.transient


def test_server_that_never_answers_is_retried(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(_never_answers)
    set_conn("ll_silent_retry", host=server.url, password="k-silent", max_retries=2)
    started = time.monotonic()
    with pytest.raises(LocalLeadsConnectionError):
        make_hook("ll_silent_retry", timeout=0.5).get_balance()
    # The README promises connect + read timeout per attempt (3 x 1 s here, backoff 0.02 s); 5x for a loaded CI machine.
    assert time.monotonic() - started < 15
    assert len(server.requests) == 3


def test_connection_refused(set_conn: ConnSetter, make_hook: HookFactory) -> None:
    port = closed_port()
    set_conn("ll_refused", host=f"http://127.0.0.1:{port}", password="k-refused", max_retries=1)
    started = time.monotonic()
    with pytest.raises(LocalLeadsConnectionError) as info:
        make_hook("ll_refused", timeout=0.5).get_balance()
    # The README promises connect + read timeout per attempt (2 x 1 s here); 5x for a loaded CI machine.
    # "Could not reach" below (not "did not answer") shows the refusal, not a timeout, ended each attempt.
    assert time.monotonic() - started < 10
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "Could not reach" in str(info.value)


def test_slow_answer_times_out_then_retry_succeeds(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_slow", host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=1)
    localleads_sandbox.slow_next(2.0)
    started = time.monotonic()
    balance = make_hook("ll_slow", timeout=0.5).get_balance()
    assert balance.available_credits == 82
    # At most 5x the README's 2 x (connect + read timeout), for a loaded CI machine.
    assert time.monotonic() - started < 10
    # Did not wait for the slow answer: the first attempt timed out and a second request was made
    # (no wall clock needed). The sandbox counts the abandoned slow one once it has served it, 2 s on.
    give_up = time.monotonic() + 30
    while localleads_sandbox.request_count(BALANCE_PATH) < 2 and time.monotonic() < give_up:
        time.sleep(0.05)
    assert localleads_sandbox.request_count(BALANCE_PATH) == 2


def test_slow_answer_without_retries_is_a_connection_error(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    set_conn("ll_slow0", host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=0)
    localleads_sandbox.slow_next(2.0)
    with pytest.raises(LocalLeadsConnectionError):
        make_hook("ll_slow0", timeout=0.5).get_balance()


def test_dripping_body_is_bounded_by_the_wall_clock(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    def drip(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        head = response_bytes(body=BALANCE_BODY)
        conn.sendall(head[: len(head) - len(BALANCE_BODY)])  # the headers, announcing the real length
        for byte in BALANCE_BODY:
            if server.stopping.wait(0.1):
                return
            conn.sendall(bytes([byte]))

    server = raw_server(drip)
    set_conn("ll_drip", host=server.url, password="k-drip", max_retries=0)
    started = time.monotonic()
    with pytest.raises(LocalLeadsConnectionError) as info:
        make_hook("ll_drip", timeout=0.5).get_balance()
    # The README promises connect + read timeout (1 s here) for a dripped body; 5x for a loaded CI machine.
    assert time.monotonic() - started < 5
    assert "too slowly" in str(info.value)


def _short_body_once(conn: socket.socket, server: RawServer) -> None:
    """First connection: a body shorter than its Content-Length, then hang up; later ones: a good answer."""
    with server.lock:
        first = server.accepted == 1
    if first:
        server.read_request(conn)
        conn.sendall(response_bytes(body=BALANCE_BODY[:30], content_length=len(BALANCE_BODY)))
        return
    answer_every_request(response_bytes())(conn, server)


def test_body_shorter_than_content_length_is_a_retried_connection_error(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(_short_body_once)
    set_conn("ll_short", host=server.url, password="k-short", max_retries=1)
    assert make_hook("ll_short").get_balance().available_credits == 82
    assert server.accepted == 2


def test_body_shorter_than_content_length_without_retries(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    server = raw_server(_short_body_once)
    set_conn("ll_short0", host=server.url, password="k-short", max_retries=0)
    with pytest.raises(LocalLeadsConnectionError):
        make_hook("ll_short0").get_balance()


def test_body_that_stalls_after_the_headers_is_a_connection_error(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    def stall(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        conn.sendall(response_bytes(body=BALANCE_BODY[:10], content_length=len(BALANCE_BODY)))
        server.wait_forever()

    server = raw_server(stall)
    set_conn("ll_stall", host=server.url, password="k-stall", max_retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(LocalLeadsConnectionError):
            make_hook("ll_stall", timeout=0.5).get_balance()
    finally:
        # The README promises connect + read timeout (1 s here); 5x for a loaded CI machine.
        assert time.monotonic() - started < 5


def test_connection_reset_before_any_answer_is_retried(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    def reset_first(conn: socket.socket, server: RawServer) -> None:
        with server.lock:
            first = server.accepted == 1
        if first:
            server.read_request(conn)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return  # closed with RST
        answer_every_request(response_bytes())(conn, server)

    server = raw_server(reset_first)
    set_conn("ll_reset", host=server.url, password="k-reset", max_retries=1)
    assert make_hook("ll_reset").get_balance().available_credits == 82
    assert server.accepted == 2


def test_oversized_announced_body_is_refused(
    raw_server: RawFactory, set_conn: ConnSetter, make_hook: HookFactory
) -> None:
    def huge(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        conn.sendall(response_bytes(body=b"{", content_length=50 * 1024 * 1024))

    server = raw_server(huge)
    set_conn("ll_huge", host=server.url, password="k-huge", max_retries=2)
    with pytest.raises(LocalLeadsResponseError, match="byte answer"):
        make_hook("ll_huge").get_balance()
    assert server.accepted == 1  # not retried


# ---------------------------------------------------------------------------------------- malformed bodies

_MALFORMED_BALANCE_MESSAGES = {
    "html": "HTML page",
    "empty": "empty body",
    "truncated": "not JSON",
    "array": "JSON list",
    "success_false_string": "Something went wrong",
    "success_false_object": "INTERNAL_ERROR",
    "missing_field": "availableCredits",
    "mistyped_field": "availableCredits",
    "not_json": "not JSON",
}


def test_every_malformed_kind_is_covered() -> None:
    assert set(_MALFORMED_BALANCE_MESSAGES) == set(MALFORMED_KINDS)


@pytest.mark.parametrize("kind", sorted(_MALFORMED_BALANCE_MESSAGES))
def test_malformed_balance_answers(localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, kind: str) -> None:
    # "truncated" cuts the JSON half-way but sends a matching Content-Length: the HTTP exchange is
    # complete, so it is a bad answer (not retried), unlike a body shorter than its Content-Length.
    localleads_sandbox.malformed_next(kind, times=3)
    with pytest.raises(LocalLeadsResponseError) as info:
        sandbox_hook.get_balance()
    message = str(info.value)
    assert _MALFORMED_BALANCE_MESSAGES[kind] in message
    assert BALANCE_PATH in message
    assert not info.value.transient
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1  # never retried
    assert not re.search(r"<[^>]*>", message)
    assert localleads_sandbox.api_key not in message


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing_field", "meta.total is missing"),
        ("mistyped_field", "meta.total must be an integer"),
        ("array", "list"),
    ],
)
def test_malformed_transaction_pages(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, kind: str, expected: str
) -> None:
    localleads_sandbox.malformed_next(kind)
    with pytest.raises(LocalLeadsResponseError, match=re.escape(expected)) as info:
        sandbox_hook.list_transactions(limit=5)
    assert TRANSACTIONS_PATH in str(info.value)


@pytest.mark.parametrize("kind", ["missing_field", "mistyped_field"])
def test_field_errors_carry_status_and_request_id(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook, kind: str
) -> None:
    localleads_sandbox.malformed_next(kind)
    with pytest.raises(LocalLeadsResponseError) as info:
        sandbox_hook.get_balance()
    assert "HTTP 200" in str(info.value)
    assert info.value.request_id == localleads_sandbox.requests[-1].request_id


def test_malformed_then_good_answers_leave_the_hook_usable(
    localleads_sandbox: SandboxServer, sandbox_hook: LocalLeadsHook
) -> None:
    localleads_sandbox.malformed_next("html")
    with pytest.raises(LocalLeadsResponseError):
        sandbox_hook.get_balance()
    assert sandbox_hook.get_balance().available_credits == 82
