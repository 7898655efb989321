"""The README's concurrent-runs recipe in the real deployment (see deployment_planning.py).

Two runs that together need more than the balance (60 + 60 of 82), at the same time, on two Celery
worker processes: in one pool slot exactly one spends and the other skips before spending anything;
without the pool (the control) both pass the check and the second spend is refused, which is the
overspend the recipe exists to prevent.
"""

from __future__ import annotations

import pytest
from deployment_airflow import Deployment
from deployment_planning import AVAILABLE, COST, DAGS, RUNS, SPEND_PREFIX, PlanningScenario, run_planning

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def planning_scenario(deployment: Deployment) -> PlanningScenario:
    return run_planning(deployment)


def test_in_one_pool_slot_exactly_one_run_spends(planning_scenario: PlanningScenario) -> None:
    states = planning_scenario.states["pooled"]
    assert sorted(state for state, _ in states.values()) == ["skipped", "success"]
    assert all(try_number == 1 for _, try_number in states.values())
    [spender] = [run_id for run_id, (state, _) in states.items() if state == "success"]
    dag_id = DAGS["pooled"]
    # The sandbox's history: one DEDUCTION, by the run that succeeded; nothing by the other.
    assert planning_scenario.spends["pooled"] == {f"{SPEND_PREFIX}{dag_id} {spender}": -COST}
    assert planning_scenario.available_after["pooled"] == AVAILABLE - COST
    assert planning_scenario.balance_reads["pooled"] == 2  # one check per run


def test_the_run_that_skipped_checked_after_the_spend(planning_scenario: PlanningScenario) -> None:
    """Serialized: the second check saw the balance the first run left, so it never started spending."""
    states = planning_scenario.states["pooled"]
    [skipper] = [run_id for run_id, (state, _) in states.items() if state == "skipped"]
    log = planning_scenario.logs["pooled"][skipper]
    assert f"Not enough LocalLeads credits: needs {COST} credits, {AVAILABLE - COST} available" in log


def test_without_the_pool_both_pass_the_check_and_they_overspend(planning_scenario: PlanningScenario) -> None:
    """The control: nothing serializes the two, both check while 82 are there, the second spend fails."""
    states = planning_scenario.states["unpooled"]
    assert sorted(state for state, _ in states.values()) == ["failed", "success"]
    [loser] = [run_id for run_id, (state, _) in states.items() if state == "failed"]
    assert "InsufficientCredits" in planning_scenario.logs["unpooled"][loser]  # refused by the sandbox's spend
    assert "Not enough LocalLeads credits" not in planning_scenario.logs["unpooled"][loser]  # it passed the check
    assert len(planning_scenario.spends["unpooled"]) == 1  # the sandbox refused the second spend
    assert planning_scenario.balance_reads["unpooled"] == 2
    assert set(planning_scenario.logs["unpooled"]) == set(RUNS)
