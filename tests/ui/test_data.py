"""The page's data against the sandbox: the JSON shape, the 30 days, the kinds, the caches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from ui_support import CONN, NOW, AddTxn, Clock

from airflow_provider_localleads.exceptions import LocalLeadsAuthenticationError, LocalLeadsConfigurationError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxServer
from airflow_provider_localleads.ui.data import CreditsData, kind_of

KEYS = ["balance", "by_kind", "conn_id", "daily", "fetched_at", "transactions", "usage"]


def load(clock: Clock | None = None) -> dict[str, Any]:
    return CreditsData(clock=clock or Clock()).credits(CONN)


def test_empty_history(sandbox: SandboxServer) -> None:
    data = load()

    assert sorted(data) == KEYS
    assert data["conn_id"] == CONN
    assert data["balance"] == CreditBalance.from_api(sandbox.balance()).to_dict()
    assert data["balance"]["available_credits"] == 82
    assert data["usage"]["spent"] == 0
    assert data["usage"]["runs_out_at"] is None
    assert data["usage"]["since"] == "2026-08-21T12:00:00Z"
    assert len(data["daily"]) == 30
    assert data["daily"][0] == {"date": "2026-08-22", "spent": 0, "added": 0}
    assert data["daily"][-1] == {"date": "2026-09-20", "spent": 0, "added": 0}
    assert data["by_kind"] == {}
    assert data["transactions"] == []
    assert data["fetched_at"] == "2026-09-20T12:00:00Z"


def test_one_day(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-10, description="Lead search: cafes in Lyon", days_ago=0.1)
    add(amount=-5, description="Enrichment: emails", days_ago=0.2)
    add(amount=-3, description="Lead search: bakeries", days_ago=0.3)

    data = load()

    assert data["daily"][-1] == {"date": "2026-09-20", "spent": 18, "added": 0}
    assert sum(day["spent"] for day in data["daily"]) == 18
    assert data["by_kind"] == {"Lead search": 13, "Enrichment": 5}
    assert list(data["by_kind"]) == ["Lead search", "Enrichment"]
    assert [t["amount"] for t in data["transactions"]] == [-10, -5, -3]  # newest first
    assert data["usage"]["spent"] == 18
    assert data["usage"]["deductions"] == 3


def test_thirty_days_and_nothing_older(sandbox: SandboxServer, add: AddTxn) -> None:
    for day in range(40):  # one spend a day, 40 days back; 30 of them in the window
        add(amount=-(day + 1), description=f"Lead search: day {day}", days_ago=day + 0.25)

    data = load()

    assert [d["spent"] for d in data["daily"]] == list(range(30, 0, -1))
    assert data["usage"]["spent"] == sum(range(1, 31))
    assert data["by_kind"] == {"Lead search": sum(range(1, 31))}
    assert len(data["transactions"]) == 20
    assert [t["amount"] for t in data["transactions"]] == [-(d + 1) for d in range(20)]


def test_top_ups_are_added_not_spent(sandbox: SandboxServer, add: AddTxn) -> None:
    add(type="TOP_UP", amount=50, description="Coupon: WELCOME50", days_ago=2.1)
    add(amount=-7, description="Lead search: x", days_ago=2.2)

    data = load()

    two_days_ago = data["daily"][-3]
    assert two_days_ago == {"date": "2026-09-18", "spent": 7, "added": 50}
    assert data["by_kind"] == {"Lead search": 7}
    assert data["usage"]["spent"] == 7


def test_a_reset_inside_the_window(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-30, description="Lead search: before the reset", days_ago=25)  # 2026-08-26
    add(type="MONTHLY_RESET", amount=100, description="Monthly credit reset", days_ago=19.5)  # 2026-09-01
    add(amount=-4, description="Enrichment: after the reset", days_ago=3)

    data = load()

    by_date = {d["date"]: d for d in data["daily"]}
    assert by_date["2026-08-26"] == {"date": "2026-08-26", "spent": 30, "added": 0}
    assert by_date["2026-09-01"] == {"date": "2026-09-01", "spent": 0, "added": 100}
    assert by_date["2026-09-17"]["spent"] == 4
    assert data["by_kind"] == {"Lead search": 30, "Enrichment": 4}
    assert data["usage"]["spent"] == 34


def test_more_than_one_page_of_history(sandbox: SandboxServer, add: AddTxn) -> None:
    for i in range(250):  # 2.5 pages of 100 within the last five days
        add(amount=-1, description="Lead search: bulk", days_ago=i / 50)
    add(amount=-99, description="Lead search: too old", days_ago=45)

    data = load()

    assert data["usage"]["spent"] == 250
    assert data["by_kind"] == {"Lead search": 250}
    assert sum(d["spent"] for d in data["daily"]) == 250
    assert len(data["transactions"]) == 20
    # One pass over the history (the forecast reuses it): as many pages as reading it once takes.
    pages = sandbox.request_count(TRANSACTIONS_PATH)
    sandbox.reset_request_log()
    since = NOW - timedelta(days=30)
    with LocalLeadsHook(CONN) as hook:
        for count, txn in enumerate(hook.iter_transactions(), start=1):
            if txn.created_at < since and count >= 20:
                break
    assert pages == sandbox.request_count(TRANSACTIONS_PATH) >= 3


def test_latest_transactions_reach_before_the_window_when_it_is_quiet(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-2, description="Lead search: old", days_ago=40)

    data = load()

    assert [t["description"] for t in data["transactions"]] == ["Lead search: old"]
    assert data["usage"]["spent"] == 0
    assert data["by_kind"] == {}


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("Lead search: cafes", "Lead search"),
        ("Enrichment", "Enrichment"),
        ("a: b: c", "a"),
        (" : x", "(no description)"),
    ],
)
def test_kind_is_the_description_before_the_first_colon(description: str, kind: str) -> None:
    assert kind_of(description) == kind


def test_loads_within_a_minute_make_one_balance_request(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-3, days_ago=1)
    clock = Clock()
    data = CreditsData(clock=clock)

    for second in range(0, 60, 5):
        clock.now = NOW + timedelta(seconds=second)
        assert data.credits(CONN)["balance"]["available_credits"] == 82

    assert sandbox.request_count(BALANCE_PATH) == 1
    history_requests = sandbox.request_count(TRANSACTIONS_PATH)

    clock.now = NOW + timedelta(seconds=60)  # the balance expires, the history (5 min) does not
    sandbox.spend(2)
    fresh = data.credits(CONN)
    assert fresh["balance"]["available_credits"] == 80
    assert fresh["fetched_at"] == "2026-09-20T12:00:00Z"  # the older of the two answers
    assert sandbox.request_count(BALANCE_PATH) == 2
    assert sandbox.request_count(TRANSACTIONS_PATH) == history_requests

    clock.now = NOW + timedelta(minutes=5)
    data.credits(CONN)
    assert sandbox.request_count(TRANSACTIONS_PATH) > history_requests
    assert sandbox.request_count(BALANCE_PATH) == 3


def test_each_connection_has_its_own_cache(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, localleads_sandbox: SandboxServer
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_OTHER", sandbox.connection_json())
    data = CreditsData(clock=Clock())

    data.credits(CONN)
    data.credits("localleads_other")
    data.credits(CONN)

    assert sandbox.request_count(BALANCE_PATH) == 2


def test_errors_are_not_cached(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_DEFAULT", sandbox.connection_json().replace(sandbox.api_key, "wrong"))
    data = CreditsData(clock=Clock())
    with pytest.raises(LocalLeadsAuthenticationError):
        data.credits(CONN)

    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_DEFAULT", sandbox.connection_json())
    assert data.credits(CONN)["balance"]["available_credits"] == 82


def test_a_connection_of_another_type_is_refused_before_any_request(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any connection id the user may read reaches the page: another type's password must not leave."""
    monkeypatch.setenv("AIRFLOW_CONN_SOME_HTTP", sandbox.connection_json(conn_type="http"))

    with pytest.raises(LocalLeadsConfigurationError) as caught:
        CreditsData(clock=Clock()).credits("some_http")

    assert str(caught.value) == (
        "Connection 'some_http' is of type 'http', not 'localleads': the credits page reads only LocalLeads "
        "connections. Pick one of those"
    )
    assert sandbox.request_count() == 0
