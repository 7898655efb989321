"""The two emulated endpoints (``sandbox/api.py``), through a real HTTP client on loopback.

The sandbox is what every other test and the demo trust to behave like the real API: status codes,
exact error bodies, auth, paging and its limits, and the routing of unknown paths and methods.
"""

from __future__ import annotations

import pytest
from sandbox_support import AUTH, LIMIT_ERROR, OFFSET_ERROR, TIMESTAMP, get, page

from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxServer, SandboxState
from airflow_provider_localleads.sandbox.api import ENDPOINTS, Query, answer, check_auth


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


def test_unknown_query_parameters_are_ignored(localleads_sandbox, http_session):
    assert page(http_session, localleads_sandbox, cursor="x", limit=2)["meta"]["limit"] == 2


def test_one_hundred_thousand_transactions_page_correctly(http_session):
    # How fast they build and page is measured by bench/sandbox_throughput.py (no timed assertion here).
    state = SandboxState(seed_transactions=100_000)
    with SandboxServer(state=state) as sandbox:
        last = page(http_session, sandbox, limit=100, offset=99_950)
        first = page(http_session, sandbox, limit=100)

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


# Without HTTP: what the API module answers, in which order.


def test_the_api_serves_exactly_the_two_documented_endpoints():
    assert set(ENDPOINTS) == {BALANCE_PATH, TRANSACTIONS_PATH}


def test_an_unknown_path_then_the_method_then_the_key_then_the_query_is_reported():
    state = SandboxState(seed_transactions=0)
    bad_query = Query({"limit": "0"})
    assert answer(state, "POST", "/api/nope", bad_query, "bad key").status == 404
    assert answer(state, "POST", TRANSACTIONS_PATH, bad_query, "bad key").status == 405
    assert answer(state, "GET", TRANSACTIONS_PATH, bad_query, "bad key").status == 401
    assert answer(state, "GET", TRANSACTIONS_PATH, bad_query, None).status == 400
    assert answer(state, "GET", TRANSACTIONS_PATH, Query({}), None).status == 200


@pytest.mark.parametrize("header", [None, "Bearer secret-1", "Bearer  secret-1", "Basic secret-1"])
def test_check_auth_refuses_without_quoting_what_was_sent(header):
    message = check_auth(header, "sandbox-key")
    assert message is not None
    assert "secret-1" not in message
    assert check_auth("Bearer sandbox-key", "sandbox-key") is None
