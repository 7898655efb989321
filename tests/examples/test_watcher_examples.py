"""The watcher example DAGs' tasks read the payloads from their triggering asset events.

In-process unit tests of the task functions over hand-made asset events (the attributes a run's
``triggering_asset_events`` entries have: ``extra`` and ``timestamp``); the real scheduling is proved by
tests/deployment/test_deploy_watchers.py and tests/dagrun/test_watcher_dagrun.py.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS

pytestmark = pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="AssetWatcher exists from Airflow 3.0 on")

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
BALANCE = {"available_credits": 90, "last_reset_at": "2027-01-01T00:00:00Z", "next_reset_at": "2027-02-01T00:00:00Z"}


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(payload: dict[str, Any], minutes: int = 0) -> SimpleNamespace:
    when = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return SimpleNamespace(extra={"from_trigger": True, "payload": payload}, timestamp=when)


def triggering(asset: Any, events: list[SimpleNamespace]) -> Any:
    """A run's ``triggering_asset_events``: Airflow's own accessor (on 3.0/3.1 an Asset is no dict key)."""
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    source = SimpleNamespace(name=asset.name, uri=asset.uri)
    return TriggeringAssetEventsAccessor.build(
        SimpleNamespace(**vars(e), asset=source, source_aliases=[]) for e in events
    )


def test_monthly_refresh_handles_each_batched_reset_and_a_run_by_hand():
    module = load("localleads_monthly_refresh")
    refresh = module.dag.task_dict["refresh_leads"].python_callable
    resets = [
        {"event": "reset", "balance": BALANCE},
        {"event": "reset", "balance": {**BALANCE, "available_credits": 7}},
    ]

    assert refresh(triggering_asset_events=triggering(module.CREDITS_RESET, [event(p) for p in resets])) == resets
    assert refresh(triggering_asset_events=triggering(module.CREDITS_RESET, [])) == []


@pytest.mark.parametrize(
    ("payloads", "branch"),
    [
        ([{"event": "below", "threshold": 100, "balance": BALANCE}], ["alert_low_credits"]),
        ([{"event": "above", "threshold": 500, "balance": BALANCE}], ["resume_backlog"]),
        (  # batched into one run: the newest event wins
            [
                {"event": "below", "threshold": 100, "balance": BALANCE},
                {"event": "above", "threshold": 500, "balance": BALANCE},
            ],
            ["resume_backlog"],
        ),
        ([], []),
    ],
)
def test_credit_alerts_branches_on_the_newest_event(payloads, branch):
    module = load("localleads_credit_alerts")
    decide = module.dag.task_dict["decide"].python_callable
    events = [event(p, minutes=i) for i, p in enumerate(payloads)][::-1]  # in any order

    assert decide(triggering_asset_events=triggering(module.CREDITS_THRESHOLD, events)) == branch
