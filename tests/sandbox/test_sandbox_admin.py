"""The admin routes under ``/_sandbox/`` (``sandbox/admin.py``), over HTTP: JSON, statuses, refusals."""

from __future__ import annotations

import json

import pytest
from sandbox_support import admin, get

from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH


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
    [("GET", "nope", 404), ("POST", "", 404), ("GET", "spend", 405), ("PUT", "faults", 405), ("POST", "state", 405)],
)
def test_admin_routing(localleads_sandbox, http_session, method, route, status):
    response = admin(http_session, localleads_sandbox, method, route)
    assert response.status_code == status
    assert response.json()["success"] is False
    if status == 405:
        assert response.headers["Allow"]
    # Every refusal points at the list of what is there.
    assert "GET /_sandbox/ lists the" in response.json()["error"]


@pytest.mark.parametrize("path", ["/_sandbox/", "/_sandbox"])
def test_the_admin_root_lists_every_route_with_its_fields(localleads_sandbox, http_session, path):
    response = http_session.get(localleads_sandbox.url + path)
    assert response.status_code == 200
    routes = {(r["method"], r["path"]): r for r in response.json()["data"]}
    assert routes[("POST", "/_sandbox/spend")]["fields"] == ["amount", "description"]
    assert routes[("POST", "/_sandbox/spend")]["required"] == ["amount"]
    assert routes[("POST", "/_sandbox/top-up")]["required"] == ["amount"]
    assert routes[("POST", "/_sandbox/balance")]["fields"] == ["monthly", "bonus", "used", "reset_day", "last_reset_at"]
    assert "kind" in routes[("POST", "/_sandbox/faults")]["fields"]
    assert routes[("GET", "/_sandbox/state")]["does"]
    # What it lists is what is served: each listed POST without required fields answers (no 404/405).
    assert http_session.post(localleads_sandbox.url + "/_sandbox/reset-month", json={}).status_code == 200
