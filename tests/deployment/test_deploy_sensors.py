"""50 deferrable CreditsSensors in a real deployment, through staged top-ups and a triggerer killed and replaced.

The run (``sensor_scenario``, see deployment_scenarios.run_sensors): every sensor defers after one
balance check on a Celery worker; the triggerer then waits for all of them; five top-ups of 10
credits release the sensors that need 10, 20, ... 50 credits in turn. After the second top-up the
triggerer is killed with SIGKILL (with every process it started) and a new one is started.
"""

from __future__ import annotations

import json

import pytest
from deployment_scenarios import KILL_AFTER_STAGE, POLL, SENSORS, STAGES, STEP, SensorScenario

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]

#: What CreditsSensor.execute_complete logs when a worker resumes it with the trigger's event.
COMPLETION = "Enough LocalLeads credits: needs"
#: What the triggerer logs when a trigger's event is handed to the scheduler.
FIRED = "Trigger fired event"


def test_every_sensor_succeeds_with_one_try(sensor_scenario: SensorScenario) -> None:
    s = sensor_scenario
    assert {t: ti.state for t, ti in s.final.items()} == dict.fromkeys(s.costs, "success")
    # DEFAULT_TASK_RETRIES is 2 in the deployment: a sensor that failed once would show try 2.
    assert {t: ti.try_number for t, ti in s.final.items()} == dict.fromkeys(s.costs, 1)
    assert s.history_rows == 0, "a sensor was retried or cleared (task_instance_history rows)"


def test_each_top_up_releases_exactly_the_sensors_it_pays_for(sensor_scenario: SensorScenario) -> None:
    s = sensor_scenario
    for stage in range(1, STAGES + 1):
        due = {t for t, cost in s.costs.items() if cost <= STEP * stage}
        assert s.succeeded_after[stage] == due, f"after top-up {stage}"
        assert s.unfinished_after[stage] == set(s.costs) - due, f"after top-up {stage}"


def test_each_trigger_fires_once_and_each_sensor_completes_once(sensor_scenario: SensorScenario) -> None:
    """One event per sensor across both triggerers, and one resume on a worker (execute_complete)."""
    fired = {t: log.count(FIRED) for t, log in sensor_scenario.trigger_logs.items()}
    assert fired == dict.fromkeys(sensor_scenario.costs, 1)
    completions = {t: log.count(COMPLETION) for t, log in sensor_scenario.logs.items()}
    assert completions == dict.fromkeys(sensor_scenario.costs, 1)


def test_at_most_one_balance_request_per_interval_per_triggerer(sensor_scenario: SensorScenario) -> None:
    s = sensor_scenario
    _start, killed, _end = s.window
    before = [t for t in s.request_times if t < killed]
    after = [t for t in s.request_times if t >= killed]
    assert len(s.request_times) <= s.request_bound(), (len(s.request_times), s.request_bound(), POLL)
    # Both triggerers did poll: the waiting went on through the hand-over.
    assert before, "the first triggerer made no balance request while 50 sensors waited"
    assert after, "the new triggerer made no balance request"


def test_the_new_triggerer_adopts_every_waiting_sensor(sensor_scenario: SensorScenario) -> None:
    s = sensor_scenario
    waiting = SENSORS * (STAGES - KILL_AFTER_STAGE) // STAGES
    assert s.triggers_before_kill == waiting
    assert s.adopted_by_new_triggerer == waiting
    # Adopted, each fired once and only once (no trigger lost, none run by both triggerers):
    released_later = set(s.costs) - s.succeeded_after[KILL_AFTER_STAGE]
    assert len(released_later) == waiting
    assert all(s.final[t].state == "success" and s.final[t].try_number == 1 for t in released_later)


def test_trigger_kwargs_hold_the_connection_id_and_numbers_only(
    sensor_scenario: SensorScenario, deployment: object
) -> None:
    """What the database held for each waiting trigger (Airflow encrypts it; decrypted here)."""
    key = deployment.api_key  # type: ignore[attr-defined]
    assert len(sensor_scenario.trigger_kwargs) == SENSORS + sensor_scenario.triggers_before_kill
    for raw in sensor_scenario.trigger_kwargs:
        assert key not in raw
        kwargs = json.loads(raw)
        while isinstance(kwargs, dict) and ("__var" in kwargs or "__data__" in kwargs):  # Airflow's envelopes
            kwargs = kwargs.get("__var", kwargs.get("__data__"))
        assert isinstance(kwargs, dict), raw
        assert set(kwargs) == {"estimated_cost", "localleads_conn_id", "poll_interval", "end_at"}, raw
        assert kwargs["localleads_conn_id"] == "localleads_default"
