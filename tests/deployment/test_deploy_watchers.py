"""A CreditsResetTrigger watcher in a real deployment: one reset, one asset event, one DAG run, even
across a triggerer killed with SIGKILL and replaced."""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest
from deployment_airflow import Deployment
from deployment_watchers import WatcherScenario, run_watchers

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def watcher_scenario(deployment: Deployment) -> WatcherScenario:
    return run_watchers(deployment)


def test_the_reset_schedules_the_watching_dag_exactly_once(watcher_scenario: WatcherScenario) -> None:
    s = watcher_scenario
    assert [(run_type, state) for _, run_type, state in s.runs_after_reset] == [("asset_triggered", "success")]
    [event] = s.events_after_reset
    assert event["from_trigger"] is True
    assert event["payload"]["event"] == "reset"
    assert pendulum.parse(event["payload"]["balance"]["last_reset_at"]) == pendulum.parse(s.reset["createdAt"])
    assert set(event["payload"]) == {"event", "balance"}


def test_the_run_read_the_payload_from_its_triggering_asset_events(watcher_scenario: WatcherScenario) -> None:
    xcom: Any = watcher_scenario.payload_xcom
    payloads = json.loads(xcom) if isinstance(xcom, str | bytes) else xcom
    assert [p["event"] for p in payloads] == ["reset"], xcom


def test_a_new_triggerer_adopts_the_watcher_and_schedules_nothing_more(watcher_scenario: WatcherScenario) -> None:
    s = watcher_scenario
    assert s.adopted_by_new_triggerer
    assert s.runs_after_restart == s.runs_after_reset
    assert s.events_after_restart == s.events_after_reset
    assert len(s.trigger_rows_before) == 1  # one watcher, one trigger row
    assert "password" not in s.trigger_rows_before[0]["kwargs"]


def test_the_triggerer_logs_say_what_happened(watcher_scenario: WatcherScenario) -> None:
    first, *rest = watcher_scenario.log_lines.values()
    assert any("baseline" in line for line in first)
    assert sum("asset event" in line for line in first) == 1
    assert rest
    assert not any("asset event" in line for lines in rest for line in lines)
