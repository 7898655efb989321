"""CheckCreditsOperator in real DAG runs (``dag.test()``) against the sandbox."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_localleads.exceptions import (
    InsufficientCreditsError,
    LocalLeadsAuthenticationError,
    LocalLeadsInvalidArgumentError,
    LocalLeadsServerError,
)
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.operators.credits import CheckCreditsOperator
from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer

pytestmark = [pytest.mark.dagrun, pytest.mark.timeout(120)]

NO_RETRY_DELAY = timedelta(seconds=0)

#: Task ids of ``Record`` tasks that actually executed (cleared per test).
EXECUTED: list[str] = []


class Record(BaseOperator):
    """A downstream task that notes it ran (so "skipped" provably means "never executed")."""

    def execute(self, context: Any) -> str:
        EXECUTED.append(self.task_id)
        return self.task_id


@pytest.fixture(autouse=True)
def _clear_executed() -> None:
    EXECUTED.clear()


def expected_balance(sandbox: SandboxServer) -> dict[str, Any]:
    """What the operator should push: the sandbox's current balance as ``CreditBalance.to_dict()``."""
    return CreditBalance.from_api(sandbox.balance()).to_dict()


# ---------------------------------------------------------------------------------------------- 1


@pytest.mark.parametrize("cost", [0, 50, 82, "82"])
def test_enough_credits_succeeds_and_returns_balance(run_dag, make_dag, sandbox_conn, task_log, cost):
    sandbox = sandbox_conn.sandbox
    sandbox.set_balance(monthly=100, bonus=25, used=43)  # 82 available
    with make_dag() as dag:
        check = CheckCreditsOperator(task_id="check", estimated_cost=cost)
        check >> Record(task_id="work")

    result = run_dag(dag)

    assert dict(result) == {"check": "success", "work": "success"}
    assert result.state == "success"
    balance = result.xcom("check")
    assert balance == expected_balance(sandbox)
    assert balance["available_credits"] == 82
    assert (balance["monthly_credits"], balance["bonus_credits"], balance["used_credits"]) == (100, 25, 43)
    assert balance["next_reset_at"].endswith("Z")
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert sandbox.request_count() == 1  # nothing else (no transactions read)
    assert EXECUTED == ["work"]
    assert "Enough LocalLeads credits: needs" in task_log()


# ---------------------------------------------------------------------------------------------- 2


def test_skip_short_circuits_every_downstream_task(run_dag, make_dag, sandbox_conn):
    sandbox = sandbox_conn.sandbox
    sandbox.set_balance(monthly=100, bonus=25, used=120)  # 5 available
    with make_dag() as dag:
        check = CheckCreditsOperator(task_id="check", estimated_cost=50, on_insufficient="skip")
        level1 = Record(task_id="level1")
        level2 = Record(task_id="level2")
        all_done = Record(task_id="all_done_direct", trigger_rule="all_done")
        all_done_deep = Record(task_id="all_done_level2", trigger_rule="all_done")
        check >> level1 >> level2
        check >> all_done
        level1 >> all_done_deep
        Record(task_id="unrelated")  # not downstream of the check: must run

    result = run_dag(dag)

    assert dict(result) == {
        "check": "success",
        "level1": "skipped",
        "level2": "skipped",
        "all_done_direct": "skipped",
        "all_done_level2": "skipped",
        "unrelated": "success",
    }
    assert EXECUTED == ["unrelated"]
    assert result.xcom("check") == expected_balance(sandbox)
    assert result.xcom("check")["available_credits"] == 5
    assert sandbox.request_count(BALANCE_PATH) == 1


def test_skip_with_enough_credits_runs_downstream(run_dag, make_dag, sandbox_conn):
    with make_dag() as dag:
        check = CheckCreditsOperator(task_id="check", estimated_cost=10, on_insufficient="skip")
        check >> Record(task_id="level1") >> Record(task_id="level2")

    result = run_dag(dag)

    assert dict(result) == {"check": "success", "level1": "success", "level2": "success"}
    assert sorted(EXECUTED) == ["level1", "level2"]
    assert result.xcom("check")["available_credits"] == 82


def test_skip_leaves_teardown_tasks_alone(run_dag, make_dag, sandbox_conn):
    """Like ShortCircuitOperator: teardowns are not skipped, so clean-up still happens."""
    sandbox_conn.sandbox.set_balance(used=120)  # 5 available
    with make_dag() as dag:
        check = CheckCreditsOperator(task_id="check", estimated_cost=50, on_insufficient="skip")
        work = Record(task_id="work")
        cleanup = Record(task_id="cleanup").as_teardown()
        check >> work >> cleanup

    result = run_dag(dag)

    assert result["check"] == "success"
    assert result["work"] == "skipped"
    assert result["cleanup"] == "success"
    assert EXECUTED == ["cleanup"]


# ---------------------------------------------------------------------------------------------- 3


def test_fail_when_short_fails_without_retrying(run_dag, make_dag, sandbox_conn, failures):
    sandbox = sandbox_conn.sandbox
    sandbox.set_balance(monthly=100, bonus=25, used=43)  # 82 available
    with make_dag() as dag:
        check = CheckCreditsOperator(
            task_id="check",
            estimated_cost=120,
            on_insufficient="fail",
            retries=3,
            retry_delay=NO_RETRY_DELAY,
            **failures.callbacks(),
        )
        check >> Record(task_id="work")

    result = run_dag(dag)

    assert dict(result) == {"check": "failed", "work": "upstream_failed"}
    assert result.state == "failed"
    assert result.try_number("check") == 1  # not up_for_retry, no second try
    assert failures.retries == {}
    assert sandbox.request_count(BALANCE_PATH) == 1
    error = failures.error("check")
    assert isinstance(error, InsufficientCreditsError)
    assert isinstance(error, AirflowFailException)
    message = str(error)
    assert "needs 120 credits" in message
    assert "82 available" in message
    assert "next reset" in message
    assert EXECUTED == []


# ---------------------------------------------------------------------------------------------- 4


@pytest.mark.parametrize("cost", ["abc", "-5", "1.5", True, -5, 1.5, "", " 7 x"])
def test_bad_rendered_cost_fails_at_once_without_any_request(run_dag, make_dag, sandbox_conn, failures, cost):
    sandbox = sandbox_conn.sandbox
    with make_dag(params={"cost": cost}) as dag:
        CheckCreditsOperator(
            task_id="check",
            estimated_cost="{{ params.cost }}",
            retries=2,
            retry_delay=NO_RETRY_DELAY,
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert dict(result) == {"check": "failed"}
    assert result.try_number("check") == 1
    assert failures.retries == {}
    assert sandbox.request_count() == 0
    error = failures.error("check")
    assert isinstance(error, LocalLeadsInvalidArgumentError)
    assert isinstance(error, AirflowFailException)
    assert "estimated_cost" in str(error)
    assert repr(str(cost)) in str(error)  # as rendered: a template renders to a string


@pytest.mark.parametrize("cost", ["abc", "-5", "1.5", True, -5, 1.5, "", " 7 x", "12 credits"])
def test_bad_literal_cost_is_a_parse_time_error(make_dag, localleads_sandbox, cost):
    with make_dag(), pytest.raises(ValueError, match="estimated_cost must render to a non-negative whole") as info:
        CheckCreditsOperator(task_id="check", estimated_cost=cost)
    assert repr(cost) in str(info.value)
    assert "'check'" in str(info.value)
    assert localleads_sandbox.request_count() == 0


# ---------------------------------------------------------------------------------------------- 5


@pytest.fixture
def canary_sandbox():
    """A second sandbox whose API key is a unique canary string (to prove it is never stored)."""
    with SandboxServer(api_key=f"canary-{uuid.uuid4().hex}") as server:
        yield server


@pytest.mark.parametrize(
    ("conf", "cost", "expected"),
    [
        (None, 10, "success"),  # the DAG's default param
        ({"cost": 82}, 82, "success"),
        ({"cost": "60"}, 60, "success"),
        ({"cost": 83}, 83, "failed"),
        ({"cost": 500}, 500, "failed"),
    ],
)
def test_templated_cost_from_params(
    run_dag, make_dag, sandbox_conn, canary_sandbox, failures, task_log, conf, cost, expected
):
    sandbox_conn.set(sandbox=canary_sandbox)
    canary = canary_sandbox.api_key
    with make_dag(params={"cost": 10}) as dag:
        CheckCreditsOperator(
            task_id="check",
            estimated_cost="{{ params.cost }}",
            retries=1,
            retry_delay=NO_RETRY_DELAY,
            **failures.callbacks(),
        )

    result = run_dag(dag, conf=conf)

    assert dict(result) == {"check": expected}
    assert canary_sandbox.request_count(BALANCE_PATH) == 1
    rendered = result.rendered_fields("check")
    # forecast_days and warn_below are templated too (None: off).
    assert rendered == {
        "estimated_cost": str(cost),
        "localleads_conn_id": "localleads_default",
        "forecast_days": None,
        "warn_below": None,
    }
    if expected == "success":
        assert result.xcom("check") == expected_balance(canary_sandbox)
        stored = json.dumps(result.xcom("check"))
    else:
        error = failures.error("check")
        assert isinstance(error, InsufficientCreditsError)
        assert f"needs {cost} credits" in str(error)
        assert "82 available" in str(error)
        assert result.try_number("check") == 1
        stored = str(error)
    # The key is used (the request succeeded) but is never rendered, pushed, raised or logged.
    assert canary_sandbox.requests[0].auth_valid
    assert canary not in json.dumps(rendered)
    assert canary not in stored
    assert canary not in task_log()


@pytest.mark.parametrize(("cost", "expected"), [(50, "success"), (83, "failed"), (True, "failed"), (2.0, "failed")])
def test_native_rendering(run_dag, make_dag, sandbox_conn, failures, cost, expected):
    """With render_template_as_native_obj the template renders to the param's own type."""
    with make_dag(params={"cost": cost}, render_template_as_native_obj=True) as dag:
        CheckCreditsOperator(task_id="check", estimated_cost="{{ params.cost }}", **failures.callbacks())

    result = run_dag(dag)

    assert dict(result) == {"check": expected}
    if expected == "failed":
        error = failures.error("check")
        if cost == 83:
            assert isinstance(error, InsufficientCreditsError)
        else:
            assert isinstance(error, LocalLeadsInvalidArgumentError)
            assert repr(cost) in str(error)
            assert sandbox_conn.balance_requests() == 0


# ---------------------------------------------------------------------------------------------- 6


@pytest.mark.parametrize("value", ["bogus", "FAIL", "", None])
def test_bad_on_insufficient_is_a_parse_time_error(make_dag, localleads_sandbox, value):
    with make_dag(), pytest.raises(ValueError, match="on_insufficient") as info:
        CheckCreditsOperator(task_id="check", estimated_cost=1, on_insufficient=value)
    assert repr(value) in str(info.value)
    assert localleads_sandbox.request_count() == 0


# ---------------------------------------------------------------------------------------------- 7


def test_wrong_api_key_fails_without_retry(run_dag, make_dag, sandbox_conn, failures, task_log):
    sandbox = sandbox_conn.sandbox
    sandbox_conn.set(api_key="definitely-not-the-key", extra={"max_retries": 3})
    with make_dag() as dag:
        CheckCreditsOperator(
            task_id="check", estimated_cost=1, retries=3, retry_delay=NO_RETRY_DELAY, **failures.callbacks()
        )

    result = run_dag(dag)

    assert dict(result) == {"check": "failed"}
    assert result.try_number("check") == 1
    assert failures.retries == {}
    assert sandbox.request_count(BALANCE_PATH) == 1  # 401 is not retried by the hook either
    assert sandbox.requests[0].status == 401
    error = failures.error("check")
    assert isinstance(error, LocalLeadsAuthenticationError)
    assert isinstance(error, AirflowFailException)
    assert "401" in str(error)
    assert "definitely-not-the-key" not in str(error)
    assert "definitely-not-the-key" not in task_log()


def test_server_errors_beyond_hook_retries_use_task_retries(run_dag, make_dag, sandbox_conn, failures):
    """max_retries=1: the hook tries twice; a burst of two 503s fails try 1, Airflow retries, try 2 works."""
    sandbox = sandbox_conn.sandbox
    sandbox_conn.set(extra={"max_retries": 1})
    sandbox.fail_next(503, times=2)
    with make_dag() as dag:
        CheckCreditsOperator(
            task_id="check", estimated_cost=10, retries=1, retry_delay=NO_RETRY_DELAY, **failures.callbacks()
        )

    result = run_dag(dag)

    assert dict(result) == {"check": "success"}
    assert result.try_number("check") == 2  # the first try failed and was retried by Airflow
    assert [type(e) for e in failures.retries["check"]] == [LocalLeadsServerError]
    assert "HTTP 503" in str(failures.retries["check"][0])
    assert failures.failures == {}
    assert [r.status for r in sandbox.requests] == [503, 503, 200]
    assert result.xcom("check") == expected_balance(sandbox)


def test_server_errors_exhaust_task_retries(run_dag, make_dag, sandbox_conn, failures):
    sandbox = sandbox_conn.sandbox
    sandbox_conn.set(extra={"max_retries": 1})
    sandbox.fail_next(503, times=4)
    with make_dag() as dag:
        CheckCreditsOperator(
            task_id="check", estimated_cost=10, retries=1, retry_delay=NO_RETRY_DELAY, **failures.callbacks()
        )

    result = run_dag(dag)

    assert dict(result) == {"check": "failed"}
    assert result.try_number("check") == 2
    assert [type(e) for e in failures.retries["check"]] == [LocalLeadsServerError]
    assert isinstance(failures.error("check"), LocalLeadsServerError)
    assert not isinstance(failures.error("check"), AirflowFailException)
    assert sandbox.request_count(BALANCE_PATH) == 4
    assert result.xcom("check") is None
