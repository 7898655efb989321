"""The pre-flight example (example_dags/localleads_preflight.py) in the real scheduler, as under dag.test().

Three runs: enough credits (check, search, report), too few with ``on_insufficient="skip"`` (the
example as shipped: the check succeeds and the rest is skipped), and too few with ``"fail"`` (the
example's own suggestion for alerting: the check fails without retrying although the deployment
gives every task 2 retries, the rest is upstream_failed).
"""

from __future__ import annotations

import pytest
from deployment_scenarios import PreflightScenario

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]

TASKS = ("check_credits", "run_lead_search", "report")
EXPECTED = {
    "enough": dict.fromkeys(TASKS, "success"),
    "skip": {"check_credits": "success", "run_lead_search": "skipped", "report": "skipped"},
    "fail": {"check_credits": "failed", "run_lead_search": "upstream_failed", "report": "upstream_failed"},
}


@pytest.mark.parametrize("case", EXPECTED)
def test_scheduler_states_are_the_documented_ones(preflight_scenario: PreflightScenario, case: str) -> None:
    states = {t: state for t, (state, _) in preflight_scenario.scheduler[case].items()}
    assert states == EXPECTED[case]
    assert preflight_scenario.scheduler[case]["check_credits"][1] == 1, "the check ran more than once"


@pytest.mark.parametrize("case", EXPECTED)
def test_scheduler_and_dag_test_agree(preflight_scenario: PreflightScenario, case: str) -> None:
    """Same task states, and the same try numbers for the tasks that ran, as dag.test() on the same DAG file."""
    scheduler, dag_test = preflight_scenario.scheduler[case], preflight_scenario.dag_test[case]
    assert {t: v[0] for t, v in scheduler.items()} == {t: v[0] for t, v in dag_test.items()}
    ran = [t for t, (state, _) in scheduler.items() if state in ("success", "failed")]
    assert {t: scheduler[t][1] for t in ran} == {t: dag_test[t][1] for t in ran}


def test_runs_end_as_their_tasks_say(preflight_scenario: PreflightScenario) -> None:
    assert preflight_scenario.run_states == {"enough": "success", "skip": "success", "fail": "failed"}


def test_only_the_run_with_enough_credits_spent_any(preflight_scenario: PreflightScenario) -> None:
    assert preflight_scenario.spent == 30
