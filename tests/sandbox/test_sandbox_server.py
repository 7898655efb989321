"""Tests of the LocalLeads sandbox itself, through a real HTTP client on loopback.

The sandbox is what every other test and the demo trust to behave like the real API, so it is tested
from the outside: status codes, exact error bodies, headers, paging, the arithmetic of the controls,
every fault kind, the admin endpoints, the CLI and the pytest plugin.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_localleads.sandbox import (
    BALANCE_PATH,
    MALFORMED_KINDS,
    TRANSACTIONS_PATH,
    Fault,
    InsufficientCredits,
    SandboxClient,
    SandboxError,
    SandboxServer,
    SandboxState,
)
from airflow_provider_localleads.sandbox.state import most_recent_reset

ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NOW = datetime(2026, 5, 20, 12, 30, 15, 123456, tzinfo=UTC)
KEY = "sandbox-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT_ERROR = "limit must be an integer between 1 and 100"
OFFSET_ERROR = "offset must be an integer >= 0"


# ------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never send loopback traffic through a developer's proxy
        yield session


@pytest.fixture
def fixed_sandbox() -> Iterator[SandboxServer]:
    """A sandbox whose clock is frozen at NOW, for exact dates."""
    with SandboxServer(state=SandboxState(clock=lambda: NOW)) as server:
        yield server


def get(
    session: requests.Session, sandbox: SandboxServer, path: str, *, auth: bool = True, **params: Any
) -> requests.Response:
    return session.get(sandbox.url + path, headers=AUTH if auth else {}, params=params or None, timeout=10)


def page(session: requests.Session, sandbox: SandboxServer, **params: Any) -> dict[str, Any]:
    response = get(session, sandbox, TRANSACTIONS_PATH, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw_exchange(sandbox: SandboxServer, data: bytes) -> bytes:
    with socket.create_connection((sandbox.host, sandbox.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------------------
# Balance, headers, auth
# ------------------------------------------------------------------------------------------------------


def test_balance_matches_the_documented_example(localleads_sandbox, http_session):
    response = get(http_session, localleads_sandbox, BALANCE_PATH)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {
        "monthlyCredits",
        "bonusCredits",
        "usedCredits",
        "availableCredits",
        "resetDay",
        "lastResetAt",
    }
    assert (data["monthlyCredits"], data["bonusCredits"], data["usedCredits"]) == (100, 25, 43)
    assert data["availableCredits"] == 82
    assert data["resetDay"] == 1
    assert TIMESTAMP.match(data["lastResetAt"])
    assert data["lastResetAt"].endswith("T00:00:00.000Z")


def test_every_response_has_json_type_exact_length_and_a_request_id(localleads_sandbox, http_session):
    seen = set()
    for response in (
        get(http_session, localleads_sandbox, BALANCE_PATH),
        get(http_session, localleads_sandbox, TRANSACTIONS_PATH, limit=3),
        get(http_session, localleads_sandbox, BALANCE_PATH, auth=False),
        get(http_session, localleads_sandbox, TRANSACTIONS_PATH, limit=0),
        get(http_session, localleads_sandbox, "/nope"),
        http_session.post(localleads_sandbox.url + BALANCE_PATH, headers=AUTH, timeout=5),
        http_session.get(localleads_sandbox.url + "/_sandbox/state", timeout=5),
    ):
        assert response.headers["Content-Type"] == "application/json"
        assert int(response.headers["Content-Length"]) == len(response.content)
        assert re.fullmatch(r"req_\d+", response.headers["X-Request-Id"])
        seen.add(response.headers["X-Request-Id"])
        assert "Python" not in response.headers.get("Server", "")
    assert len(seen) == 7


def test_balance_arithmetic_follows_set_balance(localleads_sandbox, http_session):
    localleads_sandbox.set_balance(monthly=500, bonus=7, used=200, reset_day=15)
    data = get(http_session, localleads_sandbox, BALANCE_PATH).json()["data"]
    assert data["availableCredits"] == 500 + 7 - 200
    assert data["resetDay"] == 15


@pytest.mark.parametrize(
    ("header", "message_part"),
    [
        (None, "Missing Authorization header"),
        ("Basic c2FuZGJveC1rZXk6", "Malformed"),
        ("Bearer", "Malformed"),
        ("Bearer ", "Malformed"),
        ("bearer sandbox-key", "Malformed"),
        ("Bearer  sandbox-key", "Malformed"),
        ("Bearer sandbox-key extra", "Malformed"),
        ("sandbox-key", "Malformed"),
        ("Bearer wrong-secret-123", "Invalid API key"),
        ("Bearer sandbox-key2", "Invalid API key"),
    ],
)
@pytest.mark.parametrize("path", [BALANCE_PATH, TRANSACTIONS_PATH])
def test_requests_without_the_exact_bearer_key_get_401_object_error(
    localleads_sandbox, http_session, header, message_part, path
):
    headers = {} if header is None else {"Authorization": header}
    response = http_session.get(localleads_sandbox.url + path, headers=headers, timeout=5)

    assert response.status_code == 401
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "UNAUTHORIZED"
    assert message_part in body["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "wrong-secret-123" not in response.text
    assert "c2FuZGJveC1rZXk6" not in response.text


def test_a_custom_api_key_is_the_only_one_accepted(http_session):
    with SandboxServer(api_key="k-123") as sandbox:
        ok = http_session.get(sandbox.url + BALANCE_PATH, headers={"Authorization": "Bearer k-123"}, timeout=5)
        default = get(http_session, sandbox, BALANCE_PATH)
    assert ok.status_code == 200
    assert default.status_code == 401


@pytest.mark.parametrize("bad_key", ["", "has space", "tab\tkey", "caf\u00e9", "line\nbreak"])
def test_unusable_api_keys_are_refused(bad_key):
    with pytest.raises(ValueError, match="api_key"):
        SandboxServer(api_key=bad_key)


# ------------------------------------------------------------------------------------------------------
# Transactions: shape, order, paging, validation
# ------------------------------------------------------------------------------------------------------


def test_transactions_default_page_is_newest_first_with_meta(localleads_sandbox, http_session):
    body = page(http_session, localleads_sandbox)

    assert body["success"] is True
    assert body["meta"] == {"total": len(body["data"]), "limit": 50, "offset": 0}
    assert body["data"], "the default organisation has a seed history"
    for item in body["data"]:
        assert set(item) == {"id", "type", "amount", "description", "createdAt"}
        assert item["id"].startswith("txn_")
        assert item["type"] in {"DEDUCTION", "MONTHLY_RESET", "TOP_UP"}
        assert isinstance(item["amount"], int)
        assert isinstance(item["description"], str)
        assert TIMESTAMP.match(item["createdAt"])
    created = [item["createdAt"] for item in body["data"]]
    assert created == sorted(created, reverse=True)


def test_seed_history_is_consistent_with_the_balance(fixed_sandbox, http_session):
    balance = get(http_session, fixed_sandbox, BALANCE_PATH).json()["data"]
    items = page(http_session, fixed_sandbox, limit=100)["data"]

    assert balance["lastResetAt"] == "2026-05-01T00:00:00.000Z"
    oldest = items[-1]
    assert oldest["type"] == "MONTHLY_RESET"
    assert oldest["amount"] == 100
    assert oldest["createdAt"] == balance["lastResetAt"]
    assert sum(i["amount"] for i in items if i["type"] == "DEDUCTION") == -43
    assert sum(i["amount"] for i in items if i["type"] == "TOP_UP") == 25
    assert any(i["description"] == "Lead search: Dentists in Austin, TX (97 results)" for i in items)
    assert any(i["description"] == "Email enrichment: 40 contacts" for i in items)
    assert all(i["createdAt"] <= "2026-05-20T12:30:15.123Z" for i in items)


def test_seed_history_scales_with_used_credits():
    state = SandboxState(used_credits=10_000, bonus_credits=0, clock=lambda: NOW)
    items = state.all_transactions()
    assert sum(i["amount"] for i in items if i["type"] == "DEDUCTION") == -10_000
    assert len(items) <= 51  # capped: a huge "used" does not mean a huge history


def test_paging_through_everything_returns_each_entry_once(http_session):
    with SandboxServer(state=SandboxState(seed_transactions=250)) as sandbox:
        seen: list[str] = []
        sizes = []
        for offset in range(0, 300, 100):
            body = page(http_session, sandbox, limit=100, offset=offset)
            assert body["meta"] == {"total": 250, "limit": 100, "offset": offset}
            sizes.append(len(body["data"]))
            seen += [item["id"] for item in body["data"]]
        all_created = [i["createdAt"] for i in sandbox.state.all_transactions()]

    assert sizes == [100, 100, 50]
    assert len(seen) == len(set(seen)) == 250
    assert all_created == sorted(all_created, reverse=True)


@pytest.mark.parametrize("offset", [3, 4, 1000])
def test_offset_at_or_past_the_end_gives_empty_data_and_the_same_meta(http_session, offset):
    with SandboxServer(state=SandboxState(seed_transactions=3)) as sandbox:
        body = page(http_session, sandbox, limit=10, offset=offset)
    assert body["data"] == []
    assert body["meta"] == {"total": 3, "limit": 10, "offset": offset}


def test_zero_transactions(http_session):
    with SandboxServer(state=SandboxState(seed_transactions=0)) as sandbox:
        body = page(http_session, sandbox)
    assert body == {"success": True, "data": [], "meta": {"total": 0, "limit": 50, "offset": 0}}


@pytest.mark.parametrize("limit", ["1", "100", "050"])
def test_limit_bounds_are_inclusive(http_session, limit):
    with SandboxServer(state=SandboxState(seed_transactions=150)) as sandbox:
        body = page(http_session, sandbox, limit=limit)
    assert len(body["data"]) == int(limit)
    assert body["meta"]["limit"] == int(limit)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=1e1",
        "limit=%205",
        "limit=%EF%BC%95",
        "limit=5&limit=6",
    ],
)
def test_bad_limit_is_400_with_the_string_error(localleads_sandbox, http_session, query):
    response = http_session.get(f"{localleads_sandbox.url}{TRANSACTIONS_PATH}?{query}", headers=AUTH, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": LIMIT_ERROR}


@pytest.mark.parametrize("query", ["offset=-1", "offset=x", "offset=", "offset=1.0", "offset=1&offset=2"])
def test_bad_offset_is_400_with_the_string_error(localleads_sandbox, http_session, query):
    response = http_session.get(f"{localleads_sandbox.url}{TRANSACTIONS_PATH}?{query}", headers=AUTH, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": OFFSET_ERROR}


def test_auth_is_checked_before_the_query(localleads_sandbox, http_session):
    response = get(http_session, localleads_sandbox, TRANSACTIONS_PATH, auth=False, limit=0)
    assert response.status_code == 401


def test_a_flood_of_query_parameters_is_a_400(localleads_sandbox, http_session):
    query = "&".join(f"p{i}=1" for i in range(200))
    response = http_session.get(f"{localleads_sandbox.url}{TRANSACTIONS_PATH}?{query}", headers=AUTH, timeout=5)
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_unknown_query_parameters_are_ignored(localleads_sandbox, http_session):
    assert page(http_session, localleads_sandbox, cursor="x", limit=2)["meta"]["limit"] == 2


def test_one_hundred_thousand_transactions_are_fast(http_session):
    started = time.perf_counter()
    state = SandboxState(seed_transactions=100_000)
    built = time.perf_counter() - started
    with SandboxServer(state=state) as sandbox:
        started = time.perf_counter()
        last = page(http_session, sandbox, limit=100, offset=99_950)
        first = page(http_session, sandbox, limit=100)
        served = time.perf_counter() - started

    assert built < 3.0
    assert served < 2.0
    assert last["meta"]["total"] == 100_000
    assert len(last["data"]) == 50
    assert first["data"][0]["createdAt"] > last["data"][-1]["createdAt"]


def test_history_changes_between_pages_are_visible(localleads_sandbox, http_session):
    localleads_sandbox.clear_faults()
    first = page(http_session, localleads_sandbox, limit=2)
    inserted = localleads_sandbox.insert_transactions(3, amount=-2, description="New search")
    second = page(http_session, localleads_sandbox, limit=2, offset=2)

    assert [t["description"] for t in inserted] == ["New search #1", "New search #2", "New search #3"]
    assert second["meta"]["total"] == first["meta"]["total"] + 3
    # the two newest entries of the first page slid down by three places
    assert second["data"][0]["id"] == inserted[0]["id"]

    localleads_sandbox.delete_transaction(inserted[0]["id"])
    after = page(http_session, localleads_sandbox, limit=100)
    assert after["meta"]["total"] == first["meta"]["total"] + 2
    assert inserted[0]["id"] not in {t["id"] for t in after["data"]}


def test_backdated_transactions_are_slotted_in_order(fixed_sandbox):
    txn = fixed_sandbox.add_transaction("TOP_UP", 5, "Adjustment", created_at="2026-05-10T00:00:00Z")
    created = [t["createdAt"] for t in fixed_sandbox.state.all_transactions()]
    assert txn["createdAt"] == "2026-05-10T00:00:00.000Z"
    assert created == sorted(created, reverse=True)
    with pytest.raises(KeyError, match="txn_nope"):
        fixed_sandbox.delete_transaction("txn_nope")


# ------------------------------------------------------------------------------------------------------
# Routing
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/api", "/api/v1/credits", "/api/v1/credits/balance/", "/api/v2/credits/balance", "/favicon.ico"]
)
@pytest.mark.parametrize("auth", [True, False])
def test_unknown_paths_are_404(localleads_sandbox, http_session, path, auth):
    response = get(http_session, localleads_sandbox, path, auth=auth)
    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "Not found"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", [BALANCE_PATH, TRANSACTIONS_PATH])
def test_other_methods_on_api_paths_are_405(localleads_sandbox, http_session, method, path):
    response = http_session.request(method, localleads_sandbox.url + path, headers=AUTH, data=b"{}", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert response.json()["success"] is False


def test_head_is_405_without_a_body(localleads_sandbox, http_session):
    response = http_session.head(localleads_sandbox.url + BALANCE_PATH, headers=AUTH, timeout=5)
    assert response.status_code == 405
    assert response.content == b""


def test_a_garbage_request_line_gets_a_json_400(localleads_sandbox):
    answer = raw_exchange(localleads_sandbox, b"NONSENSE\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400"))
    assert b"X-Request-Id: req_" in head
    assert json.loads(body)["success"] is False


def test_unknown_http_method_gets_a_json_501(localleads_sandbox):
    answer = raw_exchange(localleads_sandbox, b"BREW /api/v1/credits/balance HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 501 " in head.split(b"\r\n")[0]
    assert json.loads(body)["success"] is False


def test_keep_alive_reuses_one_connection(localleads_sandbox):
    conn = http.client.HTTPConnection(localleads_sandbox.host, localleads_sandbox.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", BALANCE_PATH, headers=AUTH)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.request("POST", BALANCE_PATH, body=b'{"drained": true}', headers=AUTH)
        response = conn.getresponse()
        assert response.status == 405
        response.read()
        conn.request("GET", BALANCE_PATH, headers=AUTH)  # the POST body did not desync the stream
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    finally:
        conn.close()


def test_keep_alive_requests_are_not_held_back_by_nagle(localleads_sandbox, http_session):
    # Headers and body leave in two writes; without TCP_NODELAY each request waits ~40 ms for a delayed
    # ACK, which would make the hook's benchmarks measure the sandbox instead of the hook.
    started = time.perf_counter()
    for _ in range(100):
        get(http_session, localleads_sandbox, BALANCE_PATH)
    assert time.perf_counter() - started < 2.0


# ------------------------------------------------------------------------------------------------------
# Controls: arithmetic and validation
# ------------------------------------------------------------------------------------------------------


def test_spend_records_a_deduction_and_uses_credits(fixed_sandbox):
    txn = fixed_sandbox.spend(12, "Lead search: Dentists in Austin, TX (97 results)")

    assert txn["type"] == "DEDUCTION"
    assert txn["amount"] == -12
    assert txn["createdAt"] == "2026-05-20T12:30:15.123Z"
    assert fixed_sandbox.state.used_credits == 55
    assert fixed_sandbox.state.available_credits == 70
    assert fixed_sandbox.state.all_transactions()[0] == txn


def test_spend_can_use_exactly_what_is_left_but_not_more(localleads_sandbox):
    with pytest.raises(InsufficientCredits, match="only 82 available"):
        localleads_sandbox.spend(83)
    assert localleads_sandbox.state.used_credits == 43  # a refused spend changes nothing
    localleads_sandbox.spend(82)
    assert localleads_sandbox.state.available_credits == 0
    with pytest.raises(ValueError, match="only 0 available"):  # InsufficientCredits is a ValueError
        localleads_sandbox.spend(1)


def test_top_up_adds_bonus_credits(localleads_sandbox):
    txn = localleads_sandbox.top_up(30)
    assert (txn["type"], txn["amount"], txn["description"]) == ("TOP_UP", 30, "Bonus credits")
    assert localleads_sandbox.state.bonus_credits == 55
    assert localleads_sandbox.state.available_credits == 112


@pytest.mark.parametrize(
    ("bonus", "used", "bonus_after"),
    [
        (25, 43, 0),  # the month used more than the bonus: bonus is gone
        (25, 10, 15),  # bonus spent first, the rest carries forward
        (25, 0, 25),
        (0, 60, 0),
        (40, 140, 0),
    ],
)
def test_reset_month_carries_unspent_bonus_forward(bonus, used, bonus_after):
    state = SandboxState(monthly_credits=100, bonus_credits=bonus, used_credits=used, clock=lambda: NOW)
    txn = state.reset_month(at="2026-06-01T00:00:00Z")

    assert state.bonus_credits == bonus_after
    assert state.used_credits == 0
    assert state.available_credits == 100 + bonus_after
    assert state.balance()["lastResetAt"] == "2026-06-01T00:00:00.000Z"
    assert (txn["type"], txn["amount"], txn["createdAt"]) == ("MONTHLY_RESET", 100, "2026-06-01T00:00:00.000Z")


def test_reset_month_defaults_to_now(fixed_sandbox):
    fixed_sandbox.reset_month()
    assert fixed_sandbox.balance()["lastResetAt"] == "2026-05-20T12:30:15.123Z"


def test_set_balance_changes_only_the_given_fields(localleads_sandbox):
    before = localleads_sandbox.balance()
    after = localleads_sandbox.set_balance(used=10)
    assert after == {**before, "usedCredits": 10, "availableCredits": 115}
    after = localleads_sandbox.set_balance(last_reset_at=datetime(2026, 4, 15, tzinfo=UTC), reset_day=15)
    assert after["lastResetAt"] == "2026-04-15T00:00:00.000Z"
    assert after["resetDay"] == 15
    assert after["usedCredits"] == 10


def test_used_beyond_the_allowance_reports_negative_available(localleads_sandbox):
    assert localleads_sandbox.set_balance(monthly=10, bonus=0, used=15)["availableCredits"] == -5


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.spend(0), "amount"),
        (lambda s: s.spend(-5), "amount"),
        (lambda s: s.spend(1.5), "amount"),
        (lambda s: s.spend("12"), "amount"),
        (lambda s: s.spend(True), "amount"),
        (lambda s: s.spend(1, description=5), "description"),
        (lambda s: s.top_up(-1), "amount"),
        (lambda s: s.set_balance(monthly=-1), "monthly"),
        (lambda s: s.set_balance(bonus="3"), "bonus"),
        (lambda s: s.set_balance(used=-2), "used"),
        (lambda s: s.set_balance(reset_day=0), "reset_day"),
        (lambda s: s.set_balance(reset_day=32), "reset_day"),
        (lambda s: s.set_balance(last_reset_at="yesterday"), "last_reset_at"),
        (lambda s: s.set_balance(last_reset_at=datetime(2026, 5, 1)), "last_reset_at"),  # naive
        (lambda s: s.reset_month(at="2026-06-01T00:00:00"), "at"),
        (lambda s: s.add_transaction("REFUND", 1), "type"),
        (lambda s: s.insert_transactions(0), "count"),
        (lambda s: s.fail_next(200), "status"),
        (lambda s: s.fail_next(503, times=0), "times"),
        (lambda s: s.slow_next(-1), "delay_seconds"),
        (lambda s: s.slow_next(float("inf")), "delay_seconds"),
        (lambda s: s.malformed_next("xml"), "kind"),
        (lambda s: s.inject(Fault("explode")), "kind"),
        (lambda s: s.inject(Fault("html", status=500)), "status"),
        (lambda s: s.inject(Fault("slow", retry_after="1")), "retry_after"),
        (lambda s: s.fail_next(path="/_sandbox/state"), "path"),
        (lambda s: s.rate_limit_next("1\r\nX-Evil: 1"), "retry_after"),
    ],
)
def test_bad_control_input_raises_value_error_naming_the_field(localleads_sandbox, call, field):
    with pytest.raises(ValueError, match=field):
        call(localleads_sandbox)


def test_state_constructor_validates():
    with pytest.raises(ValueError, match="monthly_credits"):
        SandboxState(monthly_credits=-1)
    with pytest.raises(ValueError, match="seed_transactions"):
        SandboxState(seed_transactions=-1)


@pytest.mark.parametrize(
    ("now", "reset_day", "expected"),
    [
        (datetime(2026, 5, 20, 12, tzinfo=UTC), 1, datetime(2026, 5, 1, tzinfo=UTC)),
        (datetime(2026, 5, 20, 12, tzinfo=UTC), 25, datetime(2026, 4, 25, tzinfo=UTC)),
        (datetime(2026, 5, 20, 0, tzinfo=UTC), 20, datetime(2026, 5, 20, tzinfo=UTC)),  # at, not before
        (datetime(2026, 2, 15, tzinfo=UTC), 31, datetime(2026, 1, 31, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), 31, datetime(2026, 2, 28, tzinfo=UTC)),  # clamped
        (datetime(2028, 2, 29, 8, tzinfo=UTC), 30, datetime(2028, 2, 29, tzinfo=UTC)),  # leap year
        (datetime(2026, 1, 10, tzinfo=UTC), 15, datetime(2025, 12, 15, tzinfo=UTC)),  # across the year
    ],
)
def test_last_reset_is_the_latest_anniversary(now, reset_day, expected):
    assert most_recent_reset(now, reset_day) == expected
    assert SandboxState(reset_day=reset_day, clock=lambda: now).last_reset_at == expected


def test_concurrent_spends_and_reads_stay_consistent(localleads_sandbox):
    localleads_sandbox.set_balance(monthly=10_000, bonus=0, used=0)
    errors: list[BaseException] = []

    def spender() -> None:
        try:
            for _ in range(50):
                localleads_sandbox.spend(1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        with requests.Session() as session:
            session.trust_env = False
            for _ in range(20):
                data = session.get(localleads_sandbox.url + BALANCE_PATH, headers=AUTH, timeout=5).json()["data"]
                if data["availableCredits"] != data["monthlyCredits"] + data["bonusCredits"] - data["usedCredits"]:
                    errors.append(AssertionError(data))

    threads = [threading.Thread(target=spender) for _ in range(8)] + [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert localleads_sandbox.state.used_credits == 400
    assert localleads_sandbox.request_count(BALANCE_PATH) == 80


# ------------------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------------------


def test_fail_next_answers_503_once_then_recovers(localleads_sandbox, http_session):
    localleads_sandbox.fail_next()
    first = get(http_session, localleads_sandbox, BALANCE_PATH)
    second = get(http_session, localleads_sandbox, BALANCE_PATH)

    assert first.status_code == 503
    assert first.json() == {"success": False, "error": "Service Unavailable"}
    assert "Retry-After" not in first.headers
    assert second.status_code == 200


def test_fail_next_with_a_proxy_html_page(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(status=502, body="<html>Bad gateway</html>", content_type="text/html")
    response = get(http_session, localleads_sandbox, TRANSACTIONS_PATH)
    assert response.status_code == 502
    assert response.text == "<html>Bad gateway</html>"
    assert response.headers["Content-Type"] == "text/html"
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_fail_next_with_retry_after_and_bytes_body(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(500, retry_after="7", body=b'{"success":false,"error":"boom"}')
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert response.status_code == 500
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"] == "boom"


@pytest.mark.parametrize("retry_after", ["1", "0", "120", "Wed, 21 Oct 2026 07:28:00 GMT", "soon", "-3", ""])
def test_rate_limit_sends_retry_after_verbatim(localleads_sandbox, http_session, retry_after):
    localleads_sandbox.rate_limit_next(retry_after=retry_after)
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == retry_after
    assert response.json()["error"]["code"] == "RATE_LIMITED"


def test_rate_limit_without_retry_after(localleads_sandbox, http_session):
    localleads_sandbox.rate_limit_next(retry_after=None)
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_times_and_fifo_order(localleads_sandbox, http_session):
    localleads_sandbox.rate_limit_next(times=2)
    localleads_sandbox.fail_next(500)
    statuses = [get(http_session, localleads_sandbox, BALANCE_PATH).status_code for _ in range(5)]
    assert statuses == [429, 429, 500, 200, 200]


def test_unlimited_fault_lasts_until_cleared(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(503, times=None)
    assert [get(http_session, localleads_sandbox, BALANCE_PATH).status_code for _ in range(4)] == [503] * 4
    assert localleads_sandbox.pending_faults()[0]["times"] is None
    assert localleads_sandbox.clear_faults() == 1
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200


def test_a_path_limited_fault_waits_for_its_path(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(500, path=TRANSACTIONS_PATH)
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert get(http_session, localleads_sandbox, TRANSACTIONS_PATH).status_code == 500
    assert get(http_session, localleads_sandbox, TRANSACTIONS_PATH).status_code == 200


def test_a_later_matching_fault_is_taken_before_an_earlier_non_matching_one(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(500, path=TRANSACTIONS_PATH)
    localleads_sandbox.fail_next(502)
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 502
    assert get(http_session, localleads_sandbox, TRANSACTIONS_PATH).status_code == 500


def test_faults_come_before_auth_like_a_gateway(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(503)
    response = get(http_session, localleads_sandbox, BALANCE_PATH, auth=False)
    assert response.status_code == 503
    record = localleads_sandbox.requests[-1]
    assert (record.auth_valid, record.status, record.fault) == (False, 503, "error")


def test_faults_never_touch_admin_paths(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(503, times=None)
    localleads_sandbox.slow_next(5)
    started = time.monotonic()
    response = http_session.get(localleads_sandbox.url + "/_sandbox/state", timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started < 2
    assert len(response.json()["data"]["faults"]) == 2


@pytest.mark.parametrize("path", [BALANCE_PATH, TRANSACTIONS_PATH])
@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_every_malformed_kind(localleads_sandbox, http_session, kind, path):
    localleads_sandbox.state.clear_faults()
    good = get(http_session, localleads_sandbox, path, limit=2)
    localleads_sandbox.malformed_next(kind)
    response = get(http_session, localleads_sandbox, path, limit=2)

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    content = response.content
    if kind == "html":
        assert response.headers["Content-Type"].startswith("text/html")
        assert content.lstrip().lower().startswith(b"<!doctype html>")
        return
    assert response.headers["Content-Type"] == "application/json"
    if kind == "empty":
        assert content == b""
    elif kind == "not_json":
        assert content == b"oops"
    elif kind == "truncated":
        assert content == good.content[: len(good.content) // 2]
        with pytest.raises(ValueError):
            json.loads(content)
    elif kind == "array":
        assert json.loads(content) == [good.json()]
    elif kind == "success_false_string":
        body = json.loads(content)
        assert body["success"] is False
        assert isinstance(body["error"], str)
    elif kind == "success_false_object":
        body = json.loads(content)
        assert body["success"] is False
        assert set(body["error"]) == {"code", "message"}
    elif kind == "missing_field":
        body = json.loads(content)
        if path == BALANCE_PATH:
            assert "availableCredits" not in body["data"]
            assert "usedCredits" in body["data"]
        else:
            assert "total" not in body["meta"]
            assert body["data"] == good.json()["data"]
    elif kind == "mistyped_field":
        body = json.loads(content)
        if path == BALANCE_PATH:
            assert body["data"]["availableCredits"] == "82"
        else:
            assert body["meta"]["total"] == str(good.json()["meta"]["total"])
    else:  # pragma: no cover
        pytest.fail(f"untested kind {kind}")
    # and the fault was used up
    assert get(http_session, localleads_sandbox, path, limit=2).content == good.content


def test_slow_next_delays_then_answers_normally(localleads_sandbox, http_session):
    localleads_sandbox.slow_next(0.6)
    started = time.monotonic()
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.55
    assert localleads_sandbox.requests[-1].fault == "slow"


def test_slow_next_trips_a_client_timeout_without_server_tracebacks(localleads_sandbox, http_session, capfd):
    localleads_sandbox.slow_next(0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http_session.get(localleads_sandbox.url + BALANCE_PATH, headers=AUTH, timeout=0.2)
    time.sleep(0.6)  # let the server try to answer the departed client
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_slow_error_is_a_gateway_timeout(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(504, delay_seconds=0.3)
    started = time.monotonic()
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 504
    assert time.monotonic() - started >= 0.25


def test_stop_is_prompt_while_a_slow_fault_sleeps():
    sandbox = SandboxServer().start()
    sandbox.slow_next(30)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(requests.get(sandbox.url + BALANCE_PATH, headers=AUTH, timeout=20))
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while sandbox.pending_faults() and time.monotonic() < deadline:  # the request has taken the fault
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    sandbox.stop()
    stopped_in = time.monotonic() - started
    thread.join(5)

    assert stopped_in < 2.0
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)


# ------------------------------------------------------------------------------------------------------
# Lifecycle and robustness
# ------------------------------------------------------------------------------------------------------


def test_lifecycle(http_session):
    sandbox = SandboxServer()
    with pytest.raises(RuntimeError, match="start"):
        _ = sandbox.url
    assert not sandbox.running
    sandbox.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            sandbox.start()
        url = sandbox.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert get(http_session, sandbox, BALANCE_PATH).status_code == 200
    finally:
        sandbox.stop()
    sandbox.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=2)

    sandbox.start()  # a restart rebinds the same port: an outage and a recovery
    try:
        assert sandbox.url == url
        assert get(http_session, sandbox, BALANCE_PATH).status_code == 200
    finally:
        sandbox.stop()


def test_stop_cuts_idle_keep_alive_connections(localleads_sandbox):
    conn = http.client.HTTPConnection(localleads_sandbox.host, localleads_sandbox.port, timeout=5)
    conn.request("GET", BALANCE_PATH, headers=AUTH)
    conn.getresponse().read()
    localleads_sandbox.stop()

    def reuse() -> None:
        conn.request("GET", BALANCE_PATH, headers=AUTH)
        conn.getresponse().read()

    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        reuse()
    conn.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_non_loopback_hosts_need_allow_remote(host):
    with pytest.raises(ValueError, match="allow_remote"):
        SandboxServer(host=host)


def test_localhost_and_ipv6_loopback(http_session):
    with SandboxServer(host="localhost") as sandbox:
        assert get(http_session, sandbox, BALANCE_PATH).status_code == 200
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sandbox6 = SandboxServer(host="::1").start()
    except OSError:
        pytest.skip("IPv6 loopback not available")
    try:
        assert sandbox6.url.startswith("http://[::1]:")
        assert get(http_session, sandbox6, BALANCE_PATH).status_code == 200
    finally:
        sandbox6.stop()


def test_port_in_use_raises_oserror(localleads_sandbox):
    with pytest.raises(OSError):
        SandboxServer(port=localleads_sandbox.port).start()


def test_client_disconnects_leave_no_tracebacks(localleads_sandbox, http_session, capfd):
    for data in (
        b"GET /api/v1/credits/bal",  # half a request line
        b"GET /api/v1/credits/balance HTTP/1.1\r\nAuthorization: Bearer sandbox-key\r\n",  # half the headers
        b"GET /api/v1/credits/balance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sandbox-key\r\n\r\n",
        b'POST /_sandbox/spend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"amo',  # body cut short
    ):
        sock = socket.create_connection((localleads_sandbox.host, localleads_sandbox.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        sock.sendall(data)
        sock.close()
    time.sleep(0.3)
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_oversized_and_chunked_bodies_are_refused(localleads_sandbox):
    answer = raw_exchange(
        localleads_sandbox, b"POST /_sandbox/spend HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
    )
    assert b" 413 " in answer.split(b"\r\n")[0]
    answer = raw_exchange(
        localleads_sandbox,
        b"POST /_sandbox/spend HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert b" 411 " in answer.split(b"\r\n")[0]


def test_the_key_is_never_logged(localleads_sandbox, http_session, caplog):
    with caplog.at_level(logging.DEBUG, logger="airflow_provider_localleads.sandbox"):
        get(http_session, localleads_sandbox, BALANCE_PATH)
        http_session.get(
            localleads_sandbox.url + BALANCE_PATH, headers={"Authorization": "Bearer real-looking-key"}, timeout=5
        )
    assert "/api/v1/credits/balance" in caplog.text
    assert "sandbox-key" not in caplog.text
    assert "real-looking-key" not in caplog.text


# ------------------------------------------------------------------------------------------------------
# Request log
# ------------------------------------------------------------------------------------------------------


def test_request_log_records_what_tests_assert_on_and_never_the_key(localleads_sandbox, http_session):
    get(http_session, localleads_sandbox, BALANCE_PATH)
    get(http_session, localleads_sandbox, TRANSACTIONS_PATH, limit=10, offset=5)
    http_session.get(
        localleads_sandbox.url + TRANSACTIONS_PATH, headers={"Authorization": "Bearer nope-key"}, timeout=5
    )
    http_session.get(localleads_sandbox.url + "/_sandbox/state", timeout=5)  # admin: not recorded

    records = localleads_sandbox.requests
    assert [(r.method, r.path, r.query, r.auth_valid, r.status) for r in records] == [
        ("GET", BALANCE_PATH, {}, True, 200),
        ("GET", TRANSACTIONS_PATH, {"limit": "10", "offset": "5"}, True, 200),
        ("GET", TRANSACTIONS_PATH, {}, False, 401),
    ]
    assert all(r.request_id.startswith("req_") and r.fault is None for r in records)
    assert localleads_sandbox.request_count() == 3
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert localleads_sandbox.request_count(TRANSACTIONS_PATH) == 2
    dumped = repr(records) + json.dumps([r.to_json() for r in records])
    assert "sandbox-key" not in dumped
    assert "nope-key" not in dumped

    localleads_sandbox.reset_request_log()
    assert localleads_sandbox.requests == []
    assert localleads_sandbox.request_count() == 0


def test_request_counts_stay_exact_past_the_log_cap(http_session):
    with SandboxServer(state=SandboxState(max_logged_requests=2)) as sandbox:
        for _ in range(5):
            get(http_session, sandbox, BALANCE_PATH)
        assert len(sandbox.requests) == 2
        assert sandbox.request_count(BALANCE_PATH) == 5


# ------------------------------------------------------------------------------------------------------
# Admin endpoints over HTTP
# ------------------------------------------------------------------------------------------------------


def admin(session: requests.Session, sandbox: SandboxServer, method: str, route: str, body: Any = None):
    kwargs: dict[str, Any] = {"timeout": 5}
    if body is not None:
        kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body)
    return session.request(method, f"{sandbox.url}/_sandbox/{route}", **kwargs)


def test_admin_state_and_balance(localleads_sandbox, http_session):
    state = admin(http_session, localleads_sandbox, "GET", "state").json()["data"]
    assert state["balance"]["availableCredits"] == 82
    assert state["transactions_total"] == localleads_sandbox.state.transaction_count
    assert state["faults"] == []
    assert state["request_count"] == 0

    response = admin(http_session, localleads_sandbox, "POST", "balance", {"monthly": 200, "used": 0, "reset_day": 9})
    assert response.status_code == 200
    assert response.json()["data"]["availableCredits"] == 225
    assert admin(http_session, localleads_sandbox, "GET", "balance").json()["data"]["resetDay"] == 9
    api = get(http_session, localleads_sandbox, BALANCE_PATH).json()["data"]
    assert api["monthlyCredits"] == 200


def test_admin_spend_top_up_and_reset(localleads_sandbox, http_session):
    response = admin(http_session, localleads_sandbox, "POST", "spend", {"amount": 12, "description": "Lead search: x"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["transaction"]["amount"] == -12
    assert data["balance"]["availableCredits"] == 70

    response = admin(http_session, localleads_sandbox, "POST", "spend", {"amount": 71})
    assert response.status_code == 409
    assert "only 70 available" in response.json()["error"]
    assert localleads_sandbox.state.available_credits == 70

    data = admin(http_session, localleads_sandbox, "POST", "top-up", {"amount": 5}).json()["data"]
    assert data["transaction"]["type"] == "TOP_UP"
    assert data["balance"]["bonusCredits"] == 30

    data = admin(http_session, localleads_sandbox, "POST", "reset-month", {"at": "2026-06-01T00:00:00Z"}).json()["data"]
    assert data["balance"]["usedCredits"] == 0
    assert data["balance"]["bonusCredits"] == 0  # 30 bonus < 55 used
    assert data["balance"]["lastResetAt"] == "2026-06-01T00:00:00.000Z"
    assert admin(http_session, localleads_sandbox, "POST", "reset-month").status_code == 200


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("spend", {"amount": -3}, "amount"),
        ("spend", {"amount": "12"}, "amount"),
        ("spend", {}, "amount is required"),
        ("spend", {"ammount": 3}, "unknown field(s) ammount"),
        ("top-up", {"amount": 0}, "amount"),
        ("balance", {"monthly": 1.5}, "monthly"),
        ("balance", {"reset_day": 40}, "reset_day"),
        ("reset-month", {"at": "tomorrow"}, "at"),
        ("faults", {"kind": "explode"}, "kind"),
        ("faults", {"status": 200}, "status"),
        ("faults", {"kind": "slow", "delay": "long"}, "delay"),
        ("faults", {"status": 503, "times": 0}, "times"),
        ("faults", {}, "kind is required"),
        ("spend", b"not json", "not valid JSON"),
        ("spend", b"[1, 2]", "JSON object"),
        ("transactions", {"count": -1}, "count"),
    ],
)
def test_admin_bad_input_is_400_naming_the_field(localleads_sandbox, http_session, route, body, message):
    response = admin(http_session, localleads_sandbox, "POST", route, body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert localleads_sandbox.pending_faults() == []


def test_admin_faults(localleads_sandbox, http_session):
    response = admin(http_session, localleads_sandbox, "POST", "faults", {"status": 429, "times": 2})
    assert response.status_code == 201
    assert response.json()["data"]["kind"] == "rate_limit"
    assert response.json()["data"]["retry_after"] == "1"
    admin(http_session, localleads_sandbox, "POST", "faults", {"delay": 0.01, "path": BALANCE_PATH})
    admin(http_session, localleads_sandbox, "POST", "faults", {"kind": "not_json"})
    admin(
        http_session,
        localleads_sandbox,
        "POST",
        "faults",
        {"status": 502, "body": "<p>x</p>", "content_type": "text/html"},
    )

    pending = admin(http_session, localleads_sandbox, "GET", "faults").json()["data"]
    assert [(f["kind"], f["times"]) for f in pending] == [("rate_limit", 2), ("slow", 1), ("not_json", 1), ("error", 1)]

    first = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert admin(http_session, localleads_sandbox, "DELETE", "faults").json()["data"] == {"cleared": 4}
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200


def test_admin_requests_log(localleads_sandbox, http_session):
    get(http_session, localleads_sandbox, BALANCE_PATH)
    get(http_session, localleads_sandbox, TRANSACTIONS_PATH, limit=3)
    body = admin(http_session, localleads_sandbox, "GET", "requests").json()
    assert body["meta"] == {"total": 2}
    assert [r["path"] for r in body["data"]] == [BALANCE_PATH, TRANSACTIONS_PATH]
    assert body["data"][1]["query"] == {"limit": "3"}
    assert "sandbox-key" not in json.dumps(body)

    only = http_session.get(localleads_sandbox.url + "/_sandbox/requests", params={"path": BALANCE_PATH}, timeout=5)
    assert only.json()["meta"] == {"total": 1}
    assert admin(http_session, localleads_sandbox, "DELETE", "requests").status_code == 200
    assert localleads_sandbox.request_count() == 0


def test_admin_transactions(localleads_sandbox, http_session):
    response = admin(http_session, localleads_sandbox, "POST", "transactions", {"count": 2, "amount": -4})
    assert response.status_code == 201
    created = response.json()["data"]
    assert len(created) == 2
    assert admin(http_session, localleads_sandbox, "DELETE", f"transactions/{created[0]['id']}").status_code == 200
    missing = admin(http_session, localleads_sandbox, "DELETE", f"transactions/{created[0]['id']}")
    assert missing.status_code == 404
    assert created[0]["id"] in missing.json()["error"]


@pytest.mark.parametrize(
    ("method", "route", "status"),
    [("GET", "nope", 404), ("GET", "", 404), ("GET", "spend", 405), ("PUT", "faults", 405), ("POST", "state", 405)],
)
def test_admin_routing(localleads_sandbox, http_session, method, route, status):
    response = admin(http_session, localleads_sandbox, method, route)
    assert response.status_code == status
    assert response.json()["success"] is False
    if status == 405:
        assert response.headers["Allow"]


# ------------------------------------------------------------------------------------------------------
# SandboxClient
# ------------------------------------------------------------------------------------------------------


def test_sandbox_client_drives_every_control(localleads_sandbox, http_session):
    client = SandboxClient(localleads_sandbox.url + "/")

    assert client.balance()["availableCredits"] == 82
    txn = client.spend(12, "Lead search: Dentists in Austin, TX (97 results)")
    assert (txn["type"], txn["amount"]) == ("DEDUCTION", -12)
    assert client.top_up(8)["amount"] == 8
    assert client.set_balance(monthly=300, last_reset_at=datetime(2026, 5, 1, tzinfo=UTC))["monthlyCredits"] == 300
    reset = client.reset_month(at=datetime(2026, 6, 1, tzinfo=UTC))
    assert reset["createdAt"] == "2026-06-01T00:00:00.000Z"
    assert localleads_sandbox.state.used_credits == 0

    inserted = client.insert_transactions(2, description="Arrived")
    assert client.delete_transaction(inserted[1]["id"])["id"] == inserted[1]["id"]
    with pytest.raises(KeyError):
        client.delete_transaction(inserted[1]["id"])

    fault = client.rate_limit_next(retry_after="3", path=BALANCE_PATH)
    assert isinstance(fault, Fault)
    client.fail_next(502, body="<html>Bad gateway</html>", content_type="text/html")
    client.slow_next(0.01)
    client.malformed_next("truncated")
    assert [f["kind"] for f in client.pending_faults()] == ["rate_limit", "error", "slow", "truncated"]
    limited = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert client.clear_faults() == 3

    assert client.state()["balance"] == localleads_sandbox.balance()
    assert client.request_count() == 1
    assert client.request_count(BALANCE_PATH) == 1
    assert client.requests()[0]["status"] == 429
    client.reset_request_log()
    assert client.requests() == []


def test_sandbox_client_errors(localleads_sandbox):
    client = localleads_sandbox.client()
    with pytest.raises(InsufficientCredits, match="only 82 available"):
        client.spend(1000)
    with pytest.raises(ValueError, match="amount"):
        client.spend(-1)
    with pytest.raises(ValueError, match="times"):
        client.inject(Fault("html"), times=0)

    port = localleads_sandbox.port
    localleads_sandbox.stop()
    with pytest.raises(SandboxError, match=f"127.0.0.1:{port}"):
        SandboxClient(f"http://127.0.0.1:{port}", timeout=2).state()
    with pytest.raises(ValueError, match="url"):
        SandboxClient("file:///etc/passwd")
    with pytest.raises(ValueError, match="url"):
        SandboxClient("127.0.0.1:8765")


def test_sandbox_client_reports_a_server_that_is_not_the_sandbox(http_session):
    with SandboxServer() as other, pytest.raises(SandboxError, match="HTTP 404"):
        SandboxClient(other.url + "/api").state()


# ------------------------------------------------------------------------------------------------------
# connection_json and the pytest plugin
# ------------------------------------------------------------------------------------------------------


def test_connection_json(localleads_sandbox):
    conn = json.loads(localleads_sandbox.connection_json())
    assert conn == {"conn_type": "localleads", "host": localleads_sandbox.url, "password": "sandbox-key"}
    conn = json.loads(localleads_sandbox.connection_json("http", extra={"max_retries": 0}))
    assert conn["conn_type"] == "http"
    assert conn["extra"] == {"max_retries": 0}


def test_connection_fixture_sets_the_airflow_env_var(localleads_sandbox, localleads_sandbox_connection):
    assert localleads_sandbox_connection == "localleads_default"
    assert json.loads(os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"]) == {
        "conn_type": "localleads",
        "host": localleads_sandbox.url,
        "password": localleads_sandbox.api_key,
    }
    assert localleads_sandbox.running
    assert localleads_sandbox.host == "127.0.0.1"


def test_airflow_accepts_the_connection_json(localleads_sandbox):
    connection_module = pytest.importorskip("airflow.models.connection")
    conn = connection_module.Connection.from_json(localleads_sandbox.connection_json(), conn_id="localleads_default")
    assert conn.conn_type == "localleads"
    assert conn.host == localleads_sandbox.url
    assert conn.password == "sandbox-key"


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@pytest.mark.parametrize("how", ["conftest", "-p"])
def test_plugin_works_for_a_user_project(tmp_path, how):
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import json, os, urllib.request

            STASH = {}

            def test_dag_side(localleads_sandbox, localleads_sandbox_connection):
                conn = json.loads(os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"])
                request = urllib.request.Request(
                    conn["host"] + "/api/v1/credits/balance",
                    headers={"Authorization": "Bearer " + conn["password"]},
                )
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(request, timeout=5) as response:
                    assert json.load(response)["data"]["availableCredits"] == 82
                assert localleads_sandbox.request_count("/api/v1/credits/balance") == 1
                STASH["sandbox"] = localleads_sandbox

            def test_cleaned_up():
                assert "AIRFLOW_CONN_LOCALLEADS_DEFAULT" not in os.environ
                assert not STASH["sandbox"].running
            """
        )
    )
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    if how == "conftest":
        (tmp_path / "conftest.py").write_text(
            'pytest_plugins = ["airflow_provider_localleads.sandbox.pytest_plugin"]\n'
        )
    else:
        args[3:3] = ["-p", "airflow_provider_localleads.sandbox.pytest_plugin"]
    env = _subprocess_env()
    env.pop("AIRFLOW_CONN_LOCALLEADS_DEFAULT", None)
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_sandbox_package_does_not_import_airflow():
    code = (
        "import sys, airflow_provider_localleads.sandbox, airflow_provider_localleads.sandbox.pytest_plugin;"
        "import airflow_provider_localleads.sandbox.__main__;"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=_subprocess_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail("the sandbox CLI printed nothing")
    return proc.stdout.readline()


@pytest.fixture
def run_cli() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_localleads.sandbox", *args],
            env=_subprocess_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_cli_prints_the_real_url_serves_and_stops_on_sigterm(run_cli, http_session):
    proc = run_cli("--port", "0", "--monthly", "500", "--bonus", "0", "--used", "100", "--transactions", "120")
    line = _read_line(proc)
    match = re.search(r"(http://127\.0\.0\.1:(\d+))", line)
    assert match, line
    url = match.group(1)
    assert int(match.group(2)) != 0
    conn = json.loads(line.split("AIRFLOW_CONN_LOCALLEADS_DEFAULT=", 1)[1].strip().strip("'"))
    assert conn == {"conn_type": "localleads", "host": url, "password": "sandbox-key"}

    balance = http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=5).json()["data"]
    assert (balance["availableCredits"], balance["resetDay"]) == (400, 1)
    meta = http_session.get(url + TRANSACTIONS_PATH, headers=AUTH, timeout=5).json()["meta"]
    assert meta["total"] == 120
    SandboxClient(url).spend(10)
    assert http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=5).json()["data"]["availableCredits"] == 390

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in err
    with pytest.raises(requests.ConnectionError):
        http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=2)


def test_cli_ctrl_c_exits_cleanly(run_cli):
    proc = run_cli("--port", "0")
    _read_line(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_cli_reads_the_key_from_the_environment(run_cli, http_session):
    proc = run_cli("--port", "0", "--reset-day", "15", LOCALLEADS_SANDBOX_API_KEY="env-key-1")
    line = _read_line(proc)
    url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
    assert '"password": "env-key-1"' in line
    ok = http_session.get(url + BALANCE_PATH, headers={"Authorization": "Bearer env-key-1"}, timeout=5)
    assert ok.json()["data"]["resetDay"] == 15
    assert http_session.get(url + BALANCE_PATH, headers=AUTH, timeout=5).status_code == 401

    proc2 = run_cli("--port", "0", "--api-key", "flag-key", LOCALLEADS_SANDBOX_API_KEY="env-key-1")
    assert '"password": "flag-key"' in _read_line(proc2)  # the flag wins over the environment


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--port", "-1"], "--port"),
        (["--monthly", "ten"], "--monthly"),
        (["--reset-day", "32"], "--reset-day"),
    ],
)
def test_cli_refuses_bad_arguments(run_cli, args, message):
    proc = run_cli(*args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in err
    assert out == ""


def test_cli_reports_a_busy_port(run_cli, localleads_sandbox):
    proc = run_cli("--port", str(localleads_sandbox.port))
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "cannot listen" in err
    assert "Traceback" not in err
