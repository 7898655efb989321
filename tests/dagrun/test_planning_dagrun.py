"""Credit planning in real DAG runs (``dag.test()``): a templated CostFromHistory, require_credits in a task.

The operator and the sensor take CostFromHistory in a later change; until then ``EstimateCost`` below
is the smallest operator that does what they will do (a templated ``estimated_cost`` resolved with
``resolve_cost``), so what is proven here is Airflow's own rendering and XCom, not a stand-in for them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_localleads.estimates import CostFromHistory, resolve_cost
from airflow_provider_localleads.exceptions import InsufficientCreditsError, NoCostHistoryError
from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH

pytestmark = [pytest.mark.dagrun, pytest.mark.timeout(180)]

NO_RETRY_DELAY = timedelta(seconds=0)
#: Task ids of PaidWork tasks that got past require_credits (cleared per test).
SPENT: list[str] = []


class EstimateCost(BaseOperator):
    """Resolves a templated ``estimated_cost`` as CheckCreditsOperator will; returns cost and estimate."""

    template_fields = ("estimated_cost",)

    def __init__(self, *, estimated_cost: Any, batch: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.estimated_cost = estimated_cost
        self.batch = batch  # something to map over

    def execute(self, context: Any) -> dict[str, Any]:
        with LocalLeadsHook() as hook:
            cost, estimate = resolve_cost(self.estimated_cost, hook, self.task_id)
        self.log.info("Estimated LocalLeads cost: %s", estimate.describe() if estimate else cost)
        return {"cost": cost, "estimate": estimate.to_dict() if estimate else None}


class PaidWork(BaseOperator):
    """A task that spends credits and checks for itself first (``require_credits``)."""

    def __init__(self, *, cost: int, on_insufficient: str = "fail", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cost = cost
        self.on_insufficient = on_insufficient

    def execute(self, context: Any) -> dict[str, Any]:
        with LocalLeadsHook() as hook:
            balance = hook.require_credits(self.cost, on_insufficient=self.on_insufficient)
        SPENT.append(self.task_id)
        return balance.to_dict()


@pytest.fixture(autouse=True)
def _clear_spent() -> None:
    SPENT.clear()


def test_templated_match_is_rendered_afresh_in_every_run_of_one_dag_object(run_dag, make_dag, sandbox_conn, task_log):
    sandbox = sandbox_conn.sandbox
    # The seeded history has 'Lead search: Dentists in Austin, TX (97 results)' at 12 credits and
    # 'Lead search: Plumbers in Denver, CO (121 results)' at 15; one dearer Plumbers search on top.
    sandbox.add_transaction(
        "DEDUCTION", -30, "Lead search: Plumbers in Austin, TX (233 results)", datetime.now(UTC) - timedelta(hours=1)
    )
    with make_dag(params={"kind": "Dentists"}) as dag:
        EstimateCost(task_id="estimate", estimated_cost=CostFromHistory("Lead search: {{ params.kind }}*"))

    # The third run names its kind: under Airflow 3.3's dag.test() a run without conf inherits the
    # previous run's conf in params (a plain "{{ params.kind }}" string field shows the same).
    runs = [run_dag(dag), run_dag(dag, conf={"kind": "Plumbers"}), run_dag(dag, conf={"kind": "Dentists"})]

    assert [dict(r) for r in runs] == [{"estimate": "success"}] * 3
    results = [r.xcom("estimate") for r in runs]
    assert [r["cost"] for r in results] == [15, 36, 15]  # ceil(12 * 1.2), ceil(30 * 1.2), 15 again
    assert [r["estimate"]["pattern"] for r in results] == [
        "Lead search: Dentists*",
        "Lead search: Plumbers*",
        "Lead search: Dentists*",
    ]
    assert [r["estimate"]["runs_used"] for r in results] == [1, 2, 1]
    assert json.loads(json.dumps(results)) == results
    assert dag.get_task("estimate").estimated_cost.match == "Lead search: {{ params.kind }}*"
    since = results[0]["estimate"]["since"][:10]
    line = f"max of 1 run since {since} matching 'Lead search: Dentists*' is 12 credits, +20% = 15"
    assert results[0]["estimate"]["description"] == line
    assert line in task_log()
    rendered = runs[1].rendered_fields("estimate")
    assert rendered is not None
    assert "rendered='Lead search: Plumbers*'" in str(rendered["estimated_cost"])
    assert sandbox.request_count(BALANCE_PATH) == 0  # an estimate reads only the history
    assert sandbox.request_count(TRANSACTIONS_PATH) == 3  # one page per run


def test_each_map_index_renders_its_own_pattern(run_dag, make_dag, sandbox_conn):
    """Mapped task instances share the partial's CostFromHistory: each renders it from the template."""
    with make_dag() as dag:
        EstimateCost.partial(
            task_id="estimate",
            estimated_cost=CostFromHistory("Lead search: {{ ['Dentists', 'Plumbers', 'Dentists'][ti.map_index] }}*"),
        ).expand(batch=["a", "b", "c"])

    result = run_dag(dag)

    assert dict(result) == {"estimate": "success"}
    patterns = [x["estimate"]["pattern"] for x in result.xcom("estimate")]
    costs = [x["cost"] for x in result.xcom("estimate")]
    assert (patterns, costs) == (
        ["Lead search: Dentists*", "Lead search: Plumbers*", "Lead search: Dentists*"],
        [15, 18, 15],
    )


def test_no_matching_history_fails_the_task_without_retrying(run_dag, make_dag, sandbox_conn, failures):
    with make_dag() as dag:
        EstimateCost(
            task_id="estimate",
            estimated_cost=CostFromHistory("Lead search: Astronauts*"),
            retries=2,
            retry_delay=NO_RETRY_DELAY,
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert dict(result) == {"estimate": "failed"}
    assert result.try_number("estimate") == 1
    assert failures.retries == {}
    error = failures.error("estimate")
    assert isinstance(error, NoCostHistoryError)
    assert isinstance(error, AirflowFailException)
    assert "Task 'estimate': No DEDUCTION transaction in the last 90 days" in str(error)
    assert "'Lead search: Astronauts*'" in str(error)


def test_require_credits_in_the_paid_task_itself(run_dag, make_dag, sandbox_conn, failures):
    sandbox = sandbox_conn.sandbox
    sandbox.set_balance(monthly=100, bonus=25, used=43)  # 82 available
    with make_dag() as dag:
        PaidWork(task_id="fits", cost=82)
        PaidWork(task_id="fails", cost=83, retries=2, retry_delay=NO_RETRY_DELAY, **failures.callbacks())
        skips = PaidWork(task_id="skips", cost=83, on_insufficient="skip")
        skips >> PaidWork(task_id="after_skip", cost=0)

    result = run_dag(dag)

    assert dict(result) == {"fits": "success", "fails": "failed", "skips": "skipped", "after_skip": "skipped"}
    assert SPENT == ["fits"]
    assert result.xcom("fits")["available_credits"] == 82
    assert result.try_number("fails") == 1  # not retried
    assert failures.retries == {}
    error = failures.error("fails")
    assert isinstance(error, InsufficientCreditsError)
    assert str(error).startswith("Not enough LocalLeads credits: needs 83 credits, 82 available (monthly 100")
    assert sandbox.request_count(BALANCE_PATH) == 3  # one per checking task; after_skip never ran
