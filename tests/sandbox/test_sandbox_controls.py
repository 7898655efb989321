"""The control table (``sandbox/controls.py``): each control defined once, the same everywhere.

The admin routes, ``SandboxServer`` and ``SandboxClient`` all come from one table over the state's
methods; these tests pin the table to the documented admin API and prove that a control gives the
same result in process and over HTTP.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sandbox_support import NOW

from airflow_provider_localleads.sandbox import (
    BALANCE_PATH,
    Fault,
    InsufficientCredits,
    SandboxClient,
    SandboxError,
    SandboxServer,
    SandboxState,
)
from airflow_provider_localleads.sandbox.admin import ROUTES
from airflow_provider_localleads.sandbox.controls import CONTROLS, SandboxControls
from airflow_provider_localleads.sandbox.faults import FaultShortcuts


def test_the_admin_routes_are_the_documented_ones():
    assert {route: sorted(verbs) for route, verbs in ROUTES.items()} == {
        "state": ["GET"],
        "balance": ["GET", "POST"],
        "spend": ["POST"],
        "top-up": ["POST"],
        "reset-month": ["POST"],
        "faults": ["DELETE", "GET", "POST"],
        "requests": ["DELETE", "GET"],
        "transactions": ["POST"],
        "transactions/{transaction_id}": ["DELETE"],
    }


@pytest.mark.parametrize(
    ("name", "fields", "required"),
    [
        ("set_balance", ("monthly", "bonus", "used", "reset_day", "last_reset_at"), ()),
        ("spend", ("amount", "description"), ("amount",)),
        ("top_up", ("amount", "description"), ("amount",)),
        ("reset_month", ("at",), ()),
        ("insert_transactions", ("count", "type", "amount", "description", "created_at"), ()),
        ("delete_transaction", (), ()),
        ("requests", ("path",), ()),
    ],
)
def test_admin_fields_are_the_state_methods_arguments(name, fields, required):
    control = CONTROLS[name]
    assert (control.fields, control.required) == (fields, required)


def test_every_control_runs_a_state_method_or_brings_its_own():
    for name, control in CONTROLS.items():
        assert control.run is not None or callable(getattr(SandboxState, name, None)), name


def _facade_methods() -> list[str]:
    return sorted(
        {
            name
            for cls in (SandboxControls, FaultShortcuts)
            for name, value in vars(cls).items()
            if not name.startswith("_") and callable(value)
        }
    )


@pytest.mark.parametrize("name", _facade_methods())
def test_server_and_client_inherit_each_control_written_once(name):
    expected = getattr(SandboxControls, name)
    assert getattr(SandboxServer, name) is expected
    assert getattr(SandboxClient, name) is expected


@pytest.mark.parametrize("name", [*_facade_methods(), "add_transaction"])
def test_the_typed_methods_have_the_state_methods_signatures(name):
    assert inspect.signature(getattr(SandboxServer, name)) == inspect.signature(getattr(SandboxState, name))


def _scenario(sandbox: SandboxControls) -> list[Any]:
    """Every shared control, and a refusal of each kind, on one sandbox; returns what each gave."""
    results: list[Any] = []

    def record(call: Callable[[], Any]) -> None:
        try:
            results.append(("ok", call()))
        except (ValueError, KeyError) as exc:
            results.append((type(exc).__name__, exc.args[0]))

    record(sandbox.balance)
    record(lambda: sandbox.set_balance(monthly=300, last_reset_at=datetime(2026, 5, 1, tzinfo=UTC)))
    record(lambda: sandbox.set_balance(used=-1))
    record(lambda: sandbox.spend(12, "Lead search: x"))
    record(lambda: sandbox.spend(10**6))
    record(lambda: sandbox.top_up(8))
    record(lambda: sandbox.reset_month(at=datetime(2026, 6, 1, tzinfo=UTC)))
    record(lambda: sandbox.reset_month(at="2026-06-01T00:00:00"))
    record(lambda: sandbox.insert_transactions(2, description="Arrived", created_at="2026-05-03T00:00:00Z"))
    record(lambda: sandbox.delete_transaction("txn_000002"))
    record(lambda: sandbox.delete_transaction("txn_000002"))
    record(lambda: sandbox.inject(Fault("html", path=BALANCE_PATH), times=None))
    record(lambda: sandbox.inject(Fault("html"), times=0))
    record(lambda: sandbox.fail_next(502, body="<html>x</html>", content_type="text/html"))
    record(lambda: sandbox.rate_limit_next(retry_after="3"))
    record(lambda: sandbox.slow_next(0.01, times=2))
    record(lambda: sandbox.malformed_next("truncated"))
    record(sandbox.pending_faults)
    record(sandbox.clear_faults)
    record(sandbox.request_count)
    record(lambda: sandbox.request_count(BALANCE_PATH))
    record(sandbox.reset_request_log)
    record(sandbox.balance)
    return results


def test_each_control_gives_the_same_result_in_process_and_over_http():
    with (
        SandboxServer(state=SandboxState(clock=lambda: NOW)) as in_process,
        SandboxServer(state=SandboxState(clock=lambda: NOW)) as remote,
    ):
        expected = _scenario(in_process)
        assert _scenario(remote.client()) == expected
        assert remote.state.snapshot() == in_process.state.snapshot()
        assert remote.state.all_transactions() == in_process.state.all_transactions()
    assert ("ValueError", "used must be >= 0, got -1") in expected
    assert ("KeyError", "no transaction with id 'txn_000002'") in expected
    assert any(kind == InsufficientCredits.__name__ and "cannot spend" in message for kind, message in expected)


def test_a_control_without_an_admin_route_is_refused_by_the_client(localleads_sandbox):
    with pytest.raises(SandboxError, match="add_transaction has no admin endpoint"):
        localleads_sandbox.client()._control("add_transaction", type="TOP_UP", amount=1)
