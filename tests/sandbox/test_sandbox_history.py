"""The transaction history (``sandbox/history.py``): the seed, and entries kept in time order."""

from __future__ import annotations

import pytest
from sandbox_support import NOW, get, page

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxState


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


def test_backdated_transactions_are_slotted_in_order(fixed_sandbox):
    txn = fixed_sandbox.add_transaction("TOP_UP", 5, "Adjustment", created_at="2026-05-10T00:00:00Z")
    created = [t["createdAt"] for t in fixed_sandbox.state.all_transactions()]
    assert txn["createdAt"] == "2026-05-10T00:00:00.000Z"
    assert created == sorted(created, reverse=True)
    with pytest.raises(KeyError, match="txn_nope"):
        fixed_sandbox.delete_transaction("txn_nope")
