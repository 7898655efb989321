"""Fixtures for the credits page: a sandbox with a known balance and an empty history, at a fixed time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from loopback_support import clear_network_env
from ui_support import LAST_RESET, NOW, AddTxn

from airflow_provider_localleads.sandbox import SandboxServer


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_network_env(monkeypatch)


@pytest.fixture
def sandbox(localleads_sandbox: SandboxServer, localleads_sandbox_connection: str) -> SandboxServer:
    """``localleads_default`` -> a sandbox with 100 + 25 - 43 = 82 available and no history at all."""
    for txn in localleads_sandbox.state.all_transactions():
        localleads_sandbox.delete_transaction(txn["id"])
    localleads_sandbox.set_balance(monthly=100, bonus=25, used=43, reset_day=1, last_reset_at=LAST_RESET)
    localleads_sandbox.reset_request_log()
    return localleads_sandbox


@pytest.fixture
def add(sandbox: SandboxServer) -> AddTxn:
    def add_one(
        type: str = "DEDUCTION", amount: int = -1, description: str = "Lead search: x", days_ago: float = 0
    ) -> dict[str, Any]:
        when = NOW - timedelta(days=days_ago)
        return sandbox.add_transaction(type=type, amount=amount, description=description, created_at=when)

    return add_one
