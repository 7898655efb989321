"""5 CreditsSensors in reschedule mode in a real deployment: each poke is a task run on a Celery worker."""

from __future__ import annotations

import pytest
from deployment_scenarios import RESCHEDULE_COSTS, RescheduleScenario

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]


def test_every_sensor_gives_its_slot_back_while_short(reschedule_scenario: RescheduleScenario) -> None:
    assert reschedule_scenario.before_top_up == dict.fromkeys(RESCHEDULE_COSTS, "up_for_reschedule")
    assert all(count >= 1 for count in reschedule_scenario.reschedules.values()), reschedule_scenario.reschedules


def test_each_top_up_releases_the_sensors_it_pays_for(reschedule_scenario: RescheduleScenario) -> None:
    assert reschedule_scenario.succeeded_after_first == {t for t, c in RESCHEDULE_COSTS.items() if c <= 10}


def test_every_sensor_succeeds_with_one_try(reschedule_scenario: RescheduleScenario) -> None:
    final = reschedule_scenario.final
    assert {t: ti.state for t, ti in final.items()} == dict.fromkeys(RESCHEDULE_COSTS, "success")
    assert {t: ti.try_number for t, ti in final.items()} == dict.fromkeys(RESCHEDULE_COSTS, 1)
    assert reschedule_scenario.history_rows == 0
