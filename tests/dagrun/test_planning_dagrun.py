"""Credit planning in real DAG runs (``dag.test()``): a templated CostFromHistory, require_credits in a task,
CreditsSensor with a CostFromHistory in every mode, forecast_days, warn_below with a notifier and a callable.

``EstimateCost`` below is the smallest operator that resolves a templated ``estimated_cost`` with
``resolve_cost``, so what its tests prove is Airflow's own rendering and XCom of the object.
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
from airflow_provider_localleads.operators.credits import CheckCreditsOperator
from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH
from airflow_provider_localleads.sensors.credits import CreditsSensor

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

    def __init__(self, *, cost: int | CostFromHistory, on_insufficient: str = "fail", **kwargs: Any) -> None:
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


def test_require_credits_resolves_a_cost_from_history_in_the_paid_task(
    run_dag, make_dag, sandbox_conn, failures, task_log
):
    """The paid task needs no number from elsewhere: require_credits(CostFromHistory(...)) estimates, logs, checks."""
    sandbox = sandbox_conn.sandbox
    roofer_runs(sandbox)  # max 40
    day = (datetime.now(UTC) - timedelta(minutes=20)).date().isoformat()  # the older run's
    sandbox.set_balance(monthly=100, bonus=0, used=50)  # 50 available
    with make_dag() as dag:
        PaidWork(task_id="fits", cost=CostFromHistory("Lead search: Roofers*"))  # +20% = 48
        PaidWork(
            task_id="short",
            cost=CostFromHistory("Lead search: Roofers*", margin=0.5),  # +50% = 60
            retries=2,
            retry_delay=NO_RETRY_DELAY,
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert dict(result) == {"fits": "success", "short": "failed"}
    assert SPENT == ["fits"]
    assert result.xcom("fits")["available_credits"] == 50
    assert result.try_number("short") == 1  # not retried
    assert failures.retries == {}
    error = failures.error("short")
    assert isinstance(error, InsufficientCreditsError)
    assert str(error).startswith("Not enough LocalLeads credits: needs 60 credits, 50 available (monthly 100")
    out = task_log()
    basis = f"Estimated cost: max of 2 runs since {day} matching 'Lead search: Roofers*' is 40 credits"
    assert f"{basis}, +20% = 48" in out  # the operator's line, from the hook's log
    assert f"{basis}, +50% = 60" in out
    assert sandbox.request_count(TRANSACTIONS_PATH) == 2  # one history page per task
    assert sandbox.request_count(BALANCE_PATH) == 2


# ------------------------------------------------------------------------ the sensor, with an estimate

#: Sensor keyword arguments per waiting mode (``deferrable`` explicit: its default comes from config).
MODES = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"deferrable": True},
}


def roofer_runs(sandbox: Any) -> None:
    """Two recent 'Lead search: Roofers*' runs: max 40, +20% = 48 credits."""
    now = datetime.now(UTC).replace(microsecond=0)
    for minutes, amount in ((20, -30), (10, -40)):
        sandbox.add_transaction(
            "DEDUCTION", amount, "Lead search: Roofers in Reno, NV", now - timedelta(minutes=minutes)
        )


@pytest.mark.parametrize("mode", list(MODES))
def test_sensor_waits_for_a_cost_from_history(run_dag, make_dag, sandbox_conn, when_polled, task_log, resumed, mode):
    sandbox = sandbox_conn.sandbox
    roofer_runs(sandbox)
    sandbox.set_balance(monthly=100, bonus=0, used=60)  # 40 available, 48 needed
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost=CostFromHistory("Lead search: Roofers*"),
            poke_interval=0.5,
            timeout=60,
            **MODES[mode],
        )

    with when_polled(sandbox, 1.5, lambda: sandbox.top_up(10)):
        result = run_dag(dag)

    assert dict(result) == {"wait": "success"}
    assert result.xcom("wait")["available_credits"] == 50
    estimate = result.xcom("wait", key="estimate")
    assert (estimate["cost"], estimate["runs_used"]) == (48, 2)
    line = estimate["description"]
    assert line.endswith("matching 'Lead search: Roofers*' is 40 credits, +20% = 48")
    out = task_log()
    assert f"Estimated cost: {line}" in out
    assert "Waiting for LocalLeads credits: needs 48, 40 available" in out
    transactions = sandbox.request_count(TRANSACTIONS_PATH)
    if mode == "poke":
        assert transactions == 1  # once for the try, however many pokes
        assert out.count(f"Estimated cost: {line}") == out.count("Enough LocalLeads credits: needs 48")
    if mode == "reschedule":  # every poke is a new run of the task: the estimate is resolved again
        assert result.reschedule_count("wait") >= 1
        assert transactions == result.reschedule_count("wait") + 1
    if mode == "deferrable":  # resolved once on the worker; the trigger waited for 48; logged again on resume
        assert transactions == 1
        [event] = resumed
        assert (event["status"], event["estimated_cost"]) == ("success", 48)
        assert out.count(f"Estimated cost: {line}") >= 2  # before deferring and on resume (2.11 logs each twice here)
    else:
        assert resumed == []


def test_sensor_forecast_after_a_deferred_wait(run_dag, make_dag, sandbox_conn, when_polled, task_log):
    sandbox = sandbox_conn.sandbox
    sandbox.set_balance(monthly=100, bonus=0, used=95)  # 5 available
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait", estimated_cost=50, forecast_days=30, poke_interval=0.5, timeout=60, deferrable=True
        )

    with when_polled(sandbox, 1.0, lambda: sandbox.top_up(100)):
        result = run_dag(dag)

    assert dict(result) == {"wait": "success"}
    forecast = result.xcom("wait", key="forecast")
    assert (forecast["days"], forecast["available_credits"]) == (30, 105)
    assert "LocalLeads credits forecast: " in task_log()


# --------------------------------------------------------------------------- forecast_days, warn_below

NOTIFIED: list[str] = []


def low_credits_notifier() -> Any:
    """A notifier on the running Airflow's BaseNotifier, as the Slack and SMTP providers' are."""
    from airflow.providers.common.compat.notifier import BaseNotifier

    class LowCreditsNotifier(BaseNotifier):  # type: ignore[misc, valid-type]
        template_fields = ("message",)

        def __init__(self, message: str) -> None:
            super().__init__()
            self.message = message

        def notify(self, context: Any) -> None:
            NOTIFIED.append(self.message)

    return LowCreditsNotifier(
        "{{ ti.task_id }}: {{ localleads_balance.available_credits }} LocalLeads credits, "
        "{{ localleads_low_credits.remaining }} after this run (warn below {{ localleads_low_credits.warn_below }})"
    )


def test_operator_forecast_warn_below_with_a_notifier_and_a_callable(run_dag, make_dag, sandbox_conn, task_log):
    NOTIFIED.clear()
    sandbox = sandbox_conn.sandbox
    balances: list[int] = []
    with make_dag() as dag:
        CheckCreditsOperator(
            task_id="check_notifier",
            estimated_cost=70,
            forecast_days=30,
            warn_below=20,
            on_low_credits=low_credits_notifier(),
        )
        CheckCreditsOperator(
            task_id="check_callable",
            estimated_cost=70,
            warn_below="{{ params.floor }}",
            on_low_credits=lambda balance: balances.append(balance.available_credits),
            params={"floor": 15},
        )
        CheckCreditsOperator(task_id="check_plenty", estimated_cost=10, warn_below=20, on_low_credits=balances.append)

    result = run_dag(dag)

    assert dict(result) == {"check_notifier": "success", "check_callable": "success", "check_plenty": "success"}
    assert NOTIFIED == ["check_notifier: 82 LocalLeads credits, 12 after this run (warn below 20)"]
    assert balances == [82]
    forecast = result.xcom("check_notifier", key="forecast")
    assert (forecast["days"], forecast["available_credits"]) == (30, 82)
    out = task_log()
    assert "Low LocalLeads credits: 12 left after this run's 70 (warn_below=20)" in out
    assert "Low LocalLeads credits: 12 left after this run's 70 (warn_below=15)" in out
    assert "Enough LocalLeads credits: needs 70, 82 available" in out
    assert "; at the last 30 days' rate (" in out
    assert sandbox.request_count(BALANCE_PATH) == 3


def test_operator_forecast_in_the_insufficient_message(run_dag, make_dag, sandbox_conn, failures):
    with make_dag() as dag:
        CheckCreditsOperator(task_id="check", estimated_cost=83, forecast_days=7, retries=1, **failures.callbacks())

    result = run_dag(dag)

    assert dict(result) == {"check": "failed"}
    assert failures.retries == {}
    message = str(failures.error("check"))
    assert message.startswith("Not enough LocalLeads credits: needs 83 credits, 82 available")
    assert "; at the last 7 days' rate (" in message


def test_the_audit_example_reports_usage_from_get_usage(run_dag, sandbox_conn, task_log):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "example_dags" / "localleads_credit_audit.py"
    spec = importlib.util.spec_from_file_location("localleads_credit_audit_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    result = run_dag(module.dag)

    assert dict(result) == {"summarise_transactions": "success", "log_report": "success"}
    summary = result.xcom("summarise_transactions")
    with LocalLeadsHook() as hook:
        usage = hook.get_usage(30).to_dict()
    for same in ("spent", "per_day", "deductions", "available_credits", "next_reset_at", "days"):
        assert summary["usage"][same] == usage[same]
    assert summary["spent_recent"] == usage["spent"]
    assert f"Forecast: {summary['usage_summary']}" in task_log()
