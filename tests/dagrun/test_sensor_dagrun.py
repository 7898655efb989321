"""CreditsSensor in real DAG runs (``dag.test()``) against the sandbox: poke, reschedule, deferrable."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseOperator,
)
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsError,
    LocalLeadsInvalidArgumentError,
)
from airflow_provider_localleads.sandbox import BALANCE_PATH
from airflow_provider_localleads.sensors.credits import CreditsSensor

pytestmark = [pytest.mark.dagrun, pytest.mark.timeout(120)]

#: Sensor keyword arguments per waiting mode (``deferrable`` explicit: its default comes from config).
MODES = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"deferrable": True},
}


class Noop(BaseOperator):
    def execute(self, context: Any) -> None:
        return None


def short_balance(sandbox) -> None:
    sandbox.set_balance(monthly=100, bonus=25, used=120)  # 5 available


# ---------------------------------------------------------------------------------------------- 8


@pytest.mark.parametrize("mode", list(MODES))
def test_waits_through_a_top_up_then_succeeds(run_dag, make_dag, sandbox_conn, when_polled, task_log, resumed, mode):
    sandbox = sandbox_conn.sandbox
    short_balance(sandbox)
    with make_dag() as dag:
        CreditsSensor(task_id="wait", estimated_cost=50, poke_interval=0.5, timeout=30, **MODES[mode])

    with when_polled(sandbox, 1.5, lambda: sandbox.top_up(100)):
        result = run_dag(dag)

    assert dict(result) == {"wait": "success"}
    balance = result.xcom("wait")
    assert balance["available_credits"] == 105
    assert balance["available_credits"] >= 50
    assert balance["bonus_credits"] == 125
    # Not before the top-up; the upper bound only says it did not run into the 30 s timeout (the top-up
    # is seen one 0.5 s poke_interval later: 20 s is far more than five times that, for a loaded machine).
    assert 1.5 <= result.elapsed < 20
    # It polled again while waiting, but not in a tight loop: ~3 polls at poke_interval in the 1.5 s;
    # at least 2 (the first, and the one that saw the top-up), as a loaded machine may stretch the cadence.
    assert 2 <= sandbox.request_count(BALANCE_PATH) <= 10
    out = task_log()
    assert "Waiting for LocalLeads credits: needs 50, 5 available" in out
    assert "next reset" in out
    # The same success line in every mode (after a deferred wait: the trigger's, logged by execute_complete).
    assert "Enough LocalLeads credits: needs 50, 105 available (monthly 100 + bonus 125 - used 120)" in out
    if mode == "reschedule":
        assert result.reschedule_count("wait") >= 1
    if mode == "deferrable":  # the wait happened in the trigger, which fired success with the balance
        assert [e["status"] for e in resumed] == ["success"]
        assert resumed[0]["balance"] == balance
    else:
        assert resumed == []


@pytest.mark.parametrize("mode", list(MODES))
def test_enough_at_once_needs_one_request(run_dag, make_dag, sandbox_conn, resumed, mode):
    sandbox = sandbox_conn.sandbox
    with make_dag() as dag:
        CreditsSensor(task_id="wait", estimated_cost=82, poke_interval=0.5, timeout=30, **MODES[mode])

    result = run_dag(dag)

    assert dict(result) == {"wait": "success"}
    assert result.xcom("wait")["available_credits"] == 82
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert resumed == []  # deferrable: checked once on the worker, no trip through the triggerer


# ---------------------------------------------------------------------------------------------- 9


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_rides_out_a_burst_of_server_errors(run_dag, make_dag, sandbox_conn, task_log, resumed, mode):
    """Six 503s with one hook retry per poll: three failed polls are logged, then the balance is read."""
    sandbox = sandbox_conn.sandbox
    sandbox_conn.set(extra={"max_retries": 1})
    sandbox.fail_next(503, times=6)
    with make_dag() as dag:
        CreditsSensor(task_id="wait", estimated_cost=50, poke_interval=0.2, timeout=60, **MODES[mode])

    result = run_dag(dag)

    assert dict(result) == {"wait": "success"}
    assert result.xcom("wait")["available_credits"] == 82
    assert [r.status for r in sandbox.requests] == [503] * 6 + [200]
    out = task_log()
    assert "balance check failed" in out
    assert "HTTP 503" in out
    if mode == "poke":
        assert out.count("balance check failed") >= 3  # one line per failed poke
    else:  # the first poke failed on the worker, the rest of the burst hit the trigger
        assert [e["status"] for e in resumed] == ["success"]


# ---------------------------------------------------------------------------------------------- 10


@pytest.mark.parametrize("soft_fail", [False, True], ids=["hard", "soft_fail"])
@pytest.mark.parametrize("mode", list(MODES))
def test_timeout_fails_or_skips(run_dag, make_dag, sandbox_conn, failures, resumed, mode, soft_fail):
    sandbox = sandbox_conn.sandbox
    short_balance(sandbox)
    with make_dag() as dag:
        wait = CreditsSensor(
            task_id="wait",
            estimated_cost=50,
            poke_interval=0.5,
            timeout=2,
            soft_fail=soft_fail,
            retries=2,
            retry_delay=timedelta(seconds=0),
            **MODES[mode],
            **failures.callbacks(),
        )
        wait >> Noop(task_id="after")

    result = run_dag(dag)

    # Not before the 2 s timeout; the upper bound (ten times it) only says the run ended, for a loaded machine.
    assert 1.9 <= result.elapsed < 20
    assert result.try_number("wait") == 1  # a sensor timeout is final, not retried
    assert failures.retries == {}
    assert result.xcom("wait") is None
    assert sandbox.request_count(BALANCE_PATH) >= 2
    if soft_fail:
        assert dict(result) == {"wait": "skipped", "after": "skipped"}
        assert failures.failures == {}
    else:
        assert dict(result) == {"wait": "failed", "after": "upstream_failed"}
        error = failures.error("wait")
        assert isinstance(error, AirflowSensorTimeout)
        # In every mode the message says what was needed and last seen, not only how long it waited.
        assert "Timed out waiting for 50 LocalLeads credits (last seen: 5 available" in str(error)
    if mode == "deferrable":  # the trigger's own deadline (end_at) fired, with the last balance seen
        assert [e["status"] for e in resumed] == ["timeout"]
        assert resumed[0]["balance"]["available_credits"] == 5


# ---------------------------------------------------------------------------------------------- 11


@pytest.mark.parametrize("mode", list(MODES))
def test_wrong_key_fails_at_once(run_dag, make_dag, sandbox_conn, failures, resumed, mode):
    sandbox = sandbox_conn.sandbox
    sandbox_conn.set(api_key="wrong-key-for-sensor")
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost=50,
            poke_interval=0.5,
            timeout=60,
            retries=2,
            retry_delay=timedelta(seconds=0),
            **MODES[mode],
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert dict(result) == {"wait": "failed"}
    assert result.elapsed < 30  # at once, not at the 60 s timeout (half of it: room for a loaded machine)
    assert result.try_number("wait") == 1
    assert failures.retries == {}
    error = failures.error("wait")
    assert isinstance(error, LocalLeadsAuthenticationError)
    assert isinstance(error, AirflowFailException)
    assert "wrong-key-for-sensor" not in str(error)
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert resumed == []  # deferrable: the first check on the worker already failed; never deferred


def test_key_revoked_while_deferred_fails_from_the_trigger(
    run_dag, make_dag, sandbox_conn, when_polled, failures, resumed
):
    """The trigger re-reads the connection per poll: a key that goes bad mid-wait ends the wait at once."""
    sandbox = sandbox_conn.sandbox
    short_balance(sandbox)
    bad = sandbox_conn.conn_json(api_key="revoked-key")
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost=50,
            poke_interval=0.3,
            timeout=60,
            deferrable=True,
            retries=2,
            retry_delay=timedelta(seconds=0),
            **failures.callbacks(),
        )

    # monkeypatch (inside sandbox_conn) restores the variable after the test.
    revoke = lambda: os.environ.__setitem__(sandbox_conn.env_var(), bad)  # noqa: E731
    with when_polled(sandbox, 0.0, revoke, after_requests=3):  # 1 poke on the worker, 2 trigger polls
        result = run_dag(dag)

    assert dict(result) == {"wait": "failed"}
    assert result.elapsed < 30  # at once, not at the 60 s timeout (half of it: room for a loaded machine)
    assert result.try_number("wait") == 1
    error = failures.error("wait")
    assert isinstance(error, LocalLeadsAuthenticationError)
    assert "401" in str(error)
    statuses = [r.status for r in sandbox.requests]
    assert statuses[0] == 200
    assert statuses[-1] == 401
    assert statuses.count(401) == 1
    assert [(e["status"], e["error_type"]) for e in resumed] == [("error", "LocalLeadsAuthenticationError")]


@pytest.mark.parametrize(
    "mode",
    [
        "poke",
        "reschedule",
        "deferrable",
    ],
)
@pytest.mark.parametrize("problem", ["wrong_key", "bad_cost"])
@pytest.mark.parametrize("flag", ["soft_fail", "never_fail"])
def test_soft_fail_treats_permanent_errors_alike_in_every_mode(
    run_dag, make_dag, sandbox_conn, failures, mode, problem, flag
):
    """Airflow's soft_fail (and never_fail) turn a sensor's AirflowFailException into "skipped":
    BaseSensorOperator does so in poke/reschedule mode and when resuming from a trigger; the
    deferrable path's first check on the worker must agree."""
    if problem == "wrong_key":
        sandbox_conn.set(api_key="wrong-key-soft-fail")
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost=50 if problem == "wrong_key" else "lots",
            poke_interval=0.5,
            timeout=60,
            **{flag: True},
            **MODES[mode],
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert result.elapsed < 30  # at once, not at the 60 s timeout (half of it: room for a loaded machine)
    assert dict(result) == {"wait": "skipped"}
    assert failures.failures == {}


@pytest.mark.parametrize("mode", list(MODES))
def test_silent_fail_logs_a_failed_poke_and_keeps_waiting(run_dag, make_dag, sandbox_conn, task_log, mode):
    """Airflow's silent_fail, the same in every mode: an unreadable answer (not an AirflowFailException) is
    logged and the sensor pokes again (poke, reschedule; deferrable: on the worker, before deferring)."""
    sandbox = sandbox_conn.sandbox
    sandbox.malformed_next("html")
    with make_dag() as dag:
        CreditsSensor(task_id="wait", estimated_cost=50, poke_interval=0.3, timeout=60, silent_fail=True, **MODES[mode])

    result = run_dag(dag)

    assert dict(result) == {"wait": "success"}
    assert [r.status for r in sandbox.requests] == [200, 200]  # the unreadable answer, then the balance
    out = task_log()
    assert "Sensor poke failed" in out
    assert "LocalLeadsResponseError" in out


@pytest.mark.parametrize("mode", list(MODES))
def test_silent_fail_leaves_a_wrong_key_to_fail(run_dag, make_dag, sandbox_conn, failures, mode):
    """A wrong key is an AirflowFailException: Airflow's silent_fail does not cover it, in any mode."""
    sandbox_conn.set(api_key="wrong-key-silent-fail")
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost=50,
            poke_interval=0.3,
            timeout=60,
            silent_fail=True,
            **MODES[mode],
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert dict(result) == {"wait": "failed"}
    assert isinstance(failures.error("wait"), LocalLeadsAuthenticationError)
    assert sandbox_conn.sandbox.request_count(BALANCE_PATH) == 1


def test_soft_fail_key_revoked_while_deferred_skips(run_dag, make_dag, sandbox_conn, when_polled, failures):
    """The same error raised from the trigger's event is turned into "skipped" by soft_fail."""
    sandbox = sandbox_conn.sandbox
    short_balance(sandbox)
    bad = sandbox_conn.conn_json(api_key="revoked-key")
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost=50,
            poke_interval=0.3,
            timeout=60,
            deferrable=True,
            soft_fail=True,
            **failures.callbacks(),
        )

    revoke = lambda: os.environ.__setitem__(sandbox_conn.env_var(), bad)  # noqa: E731
    with when_polled(sandbox, 0.0, revoke, after_requests=2):
        result = run_dag(dag)

    assert dict(result) == {"wait": "skipped"}
    assert result.elapsed < 30  # at once, not at the 60 s timeout (half of it: room for a loaded machine)
    assert [r.status for r in sandbox.requests][-1] == 401


# ---------------------------------------------------------------------------------------------- 13


@pytest.fixture
def sensor() -> CreditsSensor:
    return CreditsSensor(task_id="wait", estimated_cost=50, poke_interval=1, timeout=10)


@pytest.mark.parametrize(
    ("event", "kept"),
    [
        ({"status": "weird", "message": "msg-unknown-status"}, "msg-unknown-status"),
        (None, "None"),
        ("success", "'success'"),
        ({}, "{}"),
        ({"status": "error", "error_type": "NoSuchError", "message": "msg-unknown-type"}, "msg-unknown-type"),
        ({"status": "error", "error_type": "AirflowFailException", "message": "msg-not-ours"}, "msg-not-ours"),
        ({"status": "error", "error_type": "__class__", "message": "msg-dunder"}, "msg-dunder"),
        ({"status": "success"}, "success"),
        ({"status": "success", "balance": None}, "success"),
        ({"status": "success", "balance": "82"}, "'82'"),
        ({"status": "SUCCESS", "balance": {"available_credits": 82}}, "SUCCESS"),
    ],
)
def test_execute_complete_fails_closed(sensor, event, kept):
    with pytest.raises(LocalLeadsError) as info:
        sensor.execute_complete(context={}, event=event)
    assert kept in str(info.value)
    assert not isinstance(info.value, AirflowSkipException)


def test_execute_complete_error_keeps_its_type_and_message(sensor):
    event = {
        "status": "error",
        "error_type": "LocalLeadsAuthenticationError",
        "message": "The LocalLeads API refused the API key [HTTP 401]",
        "transient": False,
    }
    with pytest.raises(LocalLeadsAuthenticationError, match="refused the API key"):
        sensor.execute_complete(context={}, event=event)
    with pytest.raises(LocalLeadsError, match="The LocalLeads credits trigger failed"):
        sensor.execute_complete(context={}, event={"status": "error"})


def test_execute_complete_timeout_and_success(sensor):
    with pytest.raises(AirflowSensorTimeout, match="msg-timeout"):
        sensor.execute_complete(context={}, event={"status": "timeout", "message": "msg-timeout"})
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(context={}, event={"status": "timeout"})
    sensor.soft_fail = True  # mapped by Airflow's resume_execution, what a resumed task runs
    with pytest.raises(AirflowSkipException) as info:
        sensor.resume_execution("execute_complete", {"event": {"status": "timeout", "message": "msg-timeout"}}, {})
    assert "msg-timeout" in f"{info.value} {info.value.__cause__}"
    balance = {"available_credits": 82}
    event = {"status": "success", "balance": balance, "message": "Enough LocalLeads credits: needs 50, ..."}
    assert sensor.execute_complete(context={}, event=event) == balance


class CannedEventTrigger(BaseTrigger):
    """Fires one given payload at once (stands in for a misbehaving or future CreditsTrigger)."""

    def __init__(self, payload: Any) -> None:
        super().__init__()
        self.payload = payload

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"payload": self.payload}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(self.payload)


class CannedEventSensor(CreditsSensor):
    """A CreditsSensor that defers straight to CannedEventTrigger and resumes in execute_complete."""

    def __init__(self, *, payload: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.payload = payload

    def execute(self, context: Any) -> Any:
        self.defer(
            trigger=CannedEventTrigger(self.payload),
            method_name="execute_complete",
            timeout=timedelta(seconds=30),
        )


@pytest.mark.parametrize(
    ("payload", "kept"),
    [
        ({"status": "bogus", "message": "msg-real-run"}, "msg-real-run"),
        ({"status": "error", "error_type": "NotAnError", "message": "msg-real-run-err"}, "msg-real-run-err"),
        ({"status": "success", "estimated_cost": 50}, "success"),
    ],
)
def test_bad_trigger_events_fail_a_real_run(run_dag, make_dag, sandbox_conn, failures, payload, kept):
    with make_dag() as dag:
        CannedEventSensor(
            task_id="wait",
            payload=payload,
            estimated_cost=50,
            retries=1,
            retry_delay=timedelta(seconds=0),
            **failures.callbacks(),
        )

    result = run_dag(dag)

    # Not an AirflowFailException: an unreadable event is an ordinary failure, so retries apply.
    assert dict(result) == {"wait": "failed"}
    assert result.try_number("wait") == 2
    assert result.xcom("wait") is None
    errors = failures.retries["wait"] + failures.failures["wait"]
    assert len(errors) == 2
    assert all(type(e) is LocalLeadsError for e in errors)
    assert all(kept in str(e) for e in errors)


# ---------------------------------------------------------------------------------------------- bad cost


@pytest.mark.parametrize("mode", list(MODES))
def test_bad_cost_fails_at_once_without_requests(run_dag, make_dag, sandbox_conn, failures, mode):
    sandbox = sandbox_conn.sandbox
    with make_dag() as dag:
        CreditsSensor(
            task_id="wait",
            estimated_cost="{{ params.cost }}",
            params={"cost": "lots"},
            poke_interval=0.5,
            timeout=30,
            retries=2,
            retry_delay=timedelta(seconds=0),
            **MODES[mode],
            **failures.callbacks(),
        )

    result = run_dag(dag)

    assert dict(result) == {"wait": "failed"}
    assert result.elapsed < 15  # at once, not at the 30 s timeout (half of it: room for a loaded machine)
    assert result.try_number("wait") == 1
    error = failures.error("wait")
    assert isinstance(error, LocalLeadsInvalidArgumentError)
    assert "estimated_cost" in str(error)
    assert "'lots'" in str(error)
    assert sandbox.request_count() == 0
