"""CreditsSensor, branch by branch: ``poke``/``execute``/``execute_complete`` called directly (no DAG run).

Against the real sandbox; mocked only where a branch has no other way in (``poke`` raising an
``AirflowSensorTimeout`` or an ``AirflowSkipException`` of its own). The waiting itself (poke and
reschedule loops, the triggerer resuming the task) is proven by tests/dagrun/test_sensor_dagrun.py.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
    conf,
)
from log_capture import captured_task_logs

from airflow_provider_localleads import exceptions
from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsError,
    LocalLeadsInvalidArgumentError,
    LocalLeadsResponseError,
)
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxServer
from airflow_provider_localleads.sensors.credits import DEFAULT_POKE_INTERVAL, CreditsSensor
from airflow_provider_localleads.triggers.credits import CreditsTrigger

CONN_ENV = "AIRFLOW_CONN_LOCALLEADS_DEFAULT"


@pytest.fixture
def sandbox(localleads_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The sandbox as ``localleads_default``, without hook retries: one failed request is one failed poke."""
    monkeypatch.setenv(CONN_ENV, localleads_sandbox.connection_json(extra={"max_retries": 0}))
    return localleads_sandbox


@pytest.fixture
def wrong_key(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> str:
    conn = json.loads(sandbox.connection_json(extra={"max_retries": 0}))
    conn["password"] = "wrong-key-sensor-unit"
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))
    return str(conn["password"])


def sensor(**kwargs: Any) -> CreditsSensor:
    kwargs.setdefault("estimated_cost", 50)
    kwargs.setdefault("deferrable", False)
    return CreditsSensor(task_id="wait", **kwargs)


def raising(error: BaseException) -> Any:
    """A stand-in ``poke`` that raises ``error``."""

    def poke(context: Any) -> Any:
        raise error

    return poke


def balance_of(sandbox: SandboxServer) -> dict[str, Any]:
    return CreditBalance.from_api(sandbox.balance()).to_dict()


# ------------------------------------------------------------------------------------------ defaults


def test_defaults():
    wait = CreditsSensor(task_id="wait", estimated_cost=1)
    assert wait.poke_interval == DEFAULT_POKE_INTERVAL == 300
    assert wait.deferrable is conf.getboolean("operators", "default_deferrable", fallback=False)
    assert set(wait.template_fields) == {"estimated_cost", "localleads_conn_id", "forecast_days"}
    assert wait.forecast_days is None


# ---------------------------------------------------------------------------------------------- poke


def test_poke_done_returns_the_balance_as_xcom(sandbox, capfd):
    with captured_task_logs(capfd) as log:
        result = sensor(estimated_cost=82).poke({})

    assert result.is_done is True
    assert result.xcom_value == balance_of(sandbox)
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert "Enough LocalLeads credits: needs 82, 82 available" in log()


def test_poke_not_done_has_no_xcom_and_says_what_is_missing(sandbox, capfd):
    with captured_task_logs(capfd) as log:
        result = sensor(estimated_cost=83).poke({})

    assert result.is_done is False
    assert result.xcom_value is None
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert "Waiting for LocalLeads credits: needs 83, 82 available" in log()
    assert "next reset" in log()


@pytest.mark.parametrize("fault", ["fail_next", "rate_limit_next"])
def test_transient_errors_keep_waiting(sandbox, capfd, fault):
    if fault == "fail_next":
        sandbox.fail_next(503)
    else:
        sandbox.rate_limit_next(retry_after="0")
    wait = sensor(estimated_cost=50)

    with captured_task_logs(capfd) as log:
        first, second = wait.poke({}), wait.poke({})

    assert (first.is_done, first.xcom_value) == (False, None)
    assert "balance check failed (will check again)" in log()
    assert ("HTTP 503" if fault == "fail_next" else "HTTP 429") in log()
    assert second.is_done is True
    assert [r.status for r in sandbox.requests] == [503 if fault == "fail_next" else 429, 200]


def test_a_wrong_key_fails_at_once(sandbox, wrong_key):
    with pytest.raises(LocalLeadsAuthenticationError) as info:
        sensor().poke({})
    assert isinstance(info.value, AirflowFailException)
    assert wrong_key not in str(info.value)
    assert sandbox.request_count(BALANCE_PATH) == 1


def test_an_unreadable_answer_fails_at_once(sandbox):
    sandbox.malformed_next("html")
    with pytest.raises(LocalLeadsResponseError):
        sensor().poke({})
    assert sandbox.request_count(BALANCE_PATH) == 1


def test_a_bad_cost_fails_before_any_request(sandbox):
    with pytest.raises(LocalLeadsInvalidArgumentError, match=r"estimated_cost.*'lots'"):
        sensor(estimated_cost="lots").poke({})
    assert sandbox.request_count() == 0


# ---------------------------------------------------------------------------------------- deferrable


def test_deferrable_enough_at_the_first_check_returns_without_deferring(sandbox):
    assert sensor(estimated_cost=82, deferrable=True).execute({}) == balance_of(sandbox)
    assert sandbox.request_count() == 1


@pytest.mark.parametrize(
    ("poke_interval", "timeout", "interval_s", "timeout_s"),
    [(5, 60, 5.0, 60), (timedelta(minutes=2), timedelta(hours=2), 120.0, 7200)],
    ids=["seconds", "timedelta"],
)
def test_deferrable_not_enough_defers_to_a_trigger_that_holds_no_secret(
    sandbox, poke_interval, timeout, interval_s, timeout_s
):
    wait = sensor(estimated_cost="83", deferrable=True, poke_interval=poke_interval, timeout=timeout)

    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        wait.execute({})
    after = time.time()

    deferred = info.value
    assert deferred.method_name == "execute_complete"
    left = deferred.timeout.total_seconds()
    # What is left of the timeout after the first poke (one request). Not a speed check: 10 s of slack
    # only says the timeout was not restarted or cut, whatever the load of the machine.
    assert timeout_s - 10 < left <= timeout_s
    assert type(deferred.trigger) is CreditsTrigger
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == "airflow_provider_localleads.triggers.credits.CreditsTrigger"
    end_at = kwargs.pop("end_at")
    assert before + left <= end_at <= after + left
    assert kwargs == {"estimated_cost": 83, "localleads_conn_id": "localleads_default", "poll_interval": interval_s}
    for stored in (json.dumps(kwargs), repr(deferred.trigger), repr(deferred)):
        assert sandbox.api_key not in stored
    assert sandbox.request_count() == 1  # the first check, on the worker


def test_deferrable_transient_first_check_defers(sandbox):
    sandbox.fail_next(503)
    with pytest.raises(TaskDeferred):
        sensor(estimated_cost=1, deferrable=True).execute({})
    assert [r.status for r in sandbox.requests] == [503]


def test_deferrable_rendered_conn_id_goes_into_the_trigger(localleads_sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_FROM_PARAMS", localleads_sandbox.connection_json())
    wait = sensor(estimated_cost="{{ params.cost }}", localleads_conn_id="{{ params.conn }}", deferrable=True)
    context = {"params": {"conn": "localleads_from_params", "cost": 83}}
    wait.render_template_fields(context)

    with pytest.raises(TaskDeferred) as info:
        wait.execute(context)

    kwargs = info.value.trigger.serialize()[1]
    assert (kwargs["localleads_conn_id"], kwargs["estimated_cost"]) == ("localleads_from_params", 83)
    assert localleads_sandbox.request_count() == 1  # the first check used the rendered connection


# --------------------------------------------- end states: Airflow's own loop, the deferrable first poke too


@pytest.mark.parametrize(
    ("problem", "flag", "outcome"),
    [
        ("wrong_key", None, LocalLeadsAuthenticationError),
        ("wrong_key", "soft_fail", AirflowSkipException),
        ("wrong_key", "never_fail", AirflowSkipException),
        ("bad_cost", None, LocalLeadsInvalidArgumentError),
        ("bad_cost", "soft_fail", AirflowSkipException),
        ("bad_cost", "never_fail", AirflowSkipException),
        # An ordinary error is soft_fail's business only in BaseSensorOperator's sense: it still fails.
        ("unreadable", "soft_fail", LocalLeadsResponseError),
        ("unreadable", "never_fail", AirflowSkipException),
    ],
)
def test_first_check_applies_soft_fail_and_never_fail_like_poke_mode(sandbox, monkeypatch, problem, flag, outcome):
    """BaseSensorOperator.execute's rules: the deferrable path's first poke runs inside Airflow's loop."""
    if problem == "wrong_key":
        conn = json.loads(sandbox.connection_json())
        monkeypatch.setenv(CONN_ENV, json.dumps({**conn, "password": "wrong"}))
    elif problem == "unreadable":
        sandbox.malformed_next("html")
    wait = sensor(
        estimated_cost="lots" if problem == "bad_cost" else 50, deferrable=True, **({flag: True} if flag else {})
    )

    with pytest.raises(outcome) as info:
        wait.execute({})

    assert type(info.value) is outcome
    if outcome is AirflowSkipException:
        assert f"{flag} is set to True" in str(info.value)
        assert isinstance(info.value.__cause__, LocalLeadsError)  # the reason is kept
    assert sandbox.request_count() == (0 if problem == "bad_cost" else 1)


@pytest.mark.parametrize(("soft_fail", "outcome"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)])
def test_first_check_sensor_timeout_follows_soft_fail(monkeypatch, soft_fail, outcome):
    """A poke that raises AirflowSensorTimeout (ours never does; a subclass might): soft_fail applies."""
    wait = sensor(deferrable=True, soft_fail=soft_fail)
    monkeypatch.setattr(wait, "poke", raising(AirflowSensorTimeout("poke-timeout")))
    with pytest.raises(outcome):
        wait.execute({})


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_silent_fail_logs_a_failed_poke_and_pokes_again(sandbox, monkeypatch, capfd, deferrable):
    """silent_fail as Airflow defines it: a poke's error (other than AirflowFailException, sensor or task
    timeout, skip) is logged and the next poke follows after poke_interval, on the worker. Here an
    unreadable answer, then 82 of 83 credits: poke mode pokes on (then 83), deferrable defers."""
    sandbox.malformed_next("html")
    wait = sensor(estimated_cost=83, deferrable=deferrable, silent_fail=True, poke_interval=0.05, timeout=60)
    real_poke, pokes = wait.poke, []

    def poke(context: Any) -> Any:
        pokes.append(None)
        if len(pokes) == 3:
            sandbox.top_up(1)
        return real_poke(context)

    monkeypatch.setattr(wait, "poke", poke)
    with captured_task_logs(capfd) as log:
        if deferrable:
            with pytest.raises(TaskDeferred):
                wait.execute({})
        else:
            assert wait.execute({})["available_credits"] == 83

    assert len(pokes) == (2 if deferrable else 3)
    assert "Sensor poke failed" in log()
    assert "LocalLeadsResponseError" in log()


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_silent_fail_does_not_cover_a_wrong_key(sandbox, wrong_key, deferrable):
    """A wrong key is an AirflowFailException, which Airflow's silent_fail leaves alone: it fails at once."""
    with pytest.raises(LocalLeadsAuthenticationError):
        sensor(deferrable=deferrable, silent_fail=True, poke_interval=0.05).execute({})
    assert sandbox.request_count(BALANCE_PATH) == 1


def test_first_check_passes_a_skip_through_unchanged(monkeypatch):
    skip = AirflowSkipException("skip-from-poke")
    wait = sensor(deferrable=True, never_fail=True)
    monkeypatch.setattr(wait, "poke", raising(skip))
    with pytest.raises(AirflowSkipException) as info:
        wait.execute({})
    assert info.value is skip


# ---------------------------------------------------------------------------------- execute_complete


#: A balance of 50 available credits, for events that need no sandbox.
FIFTY = CreditBalance.from_api(
    {
        "monthlyCredits": 100,
        "bonusCredits": 0,
        "usedCredits": 50,
        "availableCredits": 50,
        "resetDay": 1,
        "lastResetAt": "2026-12-01T00:00:00Z",
    }
)


def success_event(cost: int, balance: CreditBalance) -> dict[str, Any]:
    """A success event as CreditsTrigger fires it."""
    message = f"Enough LocalLeads credits: needs {cost}, {balance.summary()}"
    return {"status": "success", "balance": balance.to_dict(), "estimated_cost": cost, "message": message}


def test_execute_complete_success_returns_the_balance(sandbox):
    event = success_event(50, CreditBalance.from_api(sandbox.balance()))
    assert sensor().execute_complete({}, event) == balance_of(sandbox)


def test_execute_complete_success_logs_the_line_every_check_logs(sandbox, capfd):
    event = success_event(50, CreditBalance.from_api(sandbox.balance()))
    with captured_task_logs(capfd) as log:
        sensor().execute_complete({}, event)
    assert "Enough LocalLeads credits: needs 50, 82 available (monthly 100 + bonus 25 - used 43); next reset" in log()


@pytest.mark.parametrize(("soft_fail", "outcome"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)])
def test_a_timeout_after_the_wait_follows_soft_fail_through_airflows_resume_execution(soft_fail, outcome):
    """execute_complete raises the timeout; Airflow's resume_execution (what a resumed task runs) maps it."""
    wait = sensor(soft_fail=soft_fail)
    for event, text in [
        ({"status": "timeout", "message": "msg-timeout", "balance": None}, "msg-timeout"),
        ({"status": "timeout"}, "Timed out waiting for LocalLeads credits"),
    ]:
        with pytest.raises(AirflowSensorTimeout, match=text):
            wait.execute_complete({}, event)
        with pytest.raises(outcome) as info:
            wait.resume_execution("execute_complete", {"event": event}, {})
        assert text in f"{info.value} {info.value.__cause__}"  # 3.1+ keeps it in the cause, 2.11/3.0 in the skip


ERROR_CLASSES = sorted(
    (c for c in vars(exceptions).values() if isinstance(c, type) and issubclass(c, LocalLeadsError)),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_execute_complete_error_raises_the_class_the_trigger_named(error_class):
    event = {"status": "error", "error_type": error_class.__name__, "message": "msg-from-trigger", "transient": False}
    with pytest.raises(LocalLeadsError) as info:
        sensor().execute_complete({}, event)
    assert type(info.value) is error_class
    assert str(info.value) == "msg-from-trigger"


@pytest.mark.parametrize(
    "error_type", ["NoSuchError", "AirflowException", "AirflowFailException", "__class__", None, 7], ids=repr
)
def test_execute_complete_unknown_error_type_is_a_plain_local_leads_error(error_type):
    with pytest.raises(LocalLeadsError) as info:
        sensor().execute_complete({}, {"status": "error", "error_type": error_type, "message": "msg-unknown"})
    assert type(info.value) is LocalLeadsError
    assert str(info.value) == "msg-unknown"


@pytest.mark.parametrize(
    "event",
    [
        None,
        "success",
        ["success"],
        {},
        {"status": "success"},
        {"status": "success", "balance": "82"},
        {"status": "success", "balance": {"available_credits": 82}},  # no message: not from our trigger
        {"status": 1},
    ],
    ids=repr,
)
def test_execute_complete_garbage_fails_closed_even_with_soft_fail(event):
    """Never a silent pass, and never a skip: an unreadable event is an ordinary (retried) failure."""
    with pytest.raises(LocalLeadsError) as info:
        sensor(soft_fail=True).execute_complete({}, event)
    assert type(info.value) is LocalLeadsError
    assert "unexpected trigger event" in str(info.value)
    assert "failing closed" in str(info.value)


# ------------------------------------------------------------------------------- cost from history


class FakeTI:
    """Records ``xcom_push`` and answers ``xcom_pull`` from what was pushed (all the sensor does with its TI)."""

    map_index = -1

    def __init__(self) -> None:
        self.pushed: list[tuple[str, Any]] = []
        self.pulled: list[dict[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))

    def xcom_pull(self, **kwargs: Any) -> Any:
        self.pulled.append(kwargs)
        return next((v for k, v in reversed(self.pushed) if k == kwargs["key"]), None)


def history_sensor(sandbox: SandboxServer, **kwargs: Any) -> CreditsSensor:
    """A sensor whose cost comes from two recent 'Lead search: Roofers*' runs (max 40, +20% = 48)."""
    from airflow_provider_localleads.estimates import CostFromHistory

    now = datetime.now(UTC).replace(microsecond=0)
    for minutes, amount in ((20, -30), (10, -40)):
        sandbox.add_transaction("DEDUCTION", amount, "Lead search: Roofers in Reno", now - timedelta(minutes=minutes))
    return sensor(estimated_cost=CostFromHistory("Lead search: Roofers*"), **kwargs)


def test_poke_resolves_a_cost_from_history_once_logs_and_pushes_it(sandbox, capfd):
    wait = history_sensor(sandbox)
    ti = FakeTI()
    sandbox.set_balance(monthly=100, bonus=0, used=60)  # 40 available: not enough for 48

    with captured_task_logs(capfd) as log:
        first = wait.poke({"ti": ti})
        sandbox.top_up(10)
        second = wait.poke({"ti": ti})

    assert (first.is_done, second.is_done) == (False, True)
    [(key, estimate)] = ti.pushed  # resolved and pushed once for the two pokes
    assert key == "estimate"
    assert (estimate["cost"], estimate["runs_used"], estimate["pattern"]) == (48, 2, "Lead search: Roofers*")
    assert "Estimated cost: max of 2 runs since" in log()
    assert "matching 'Lead search: Roofers*' is 40 credits, +20% = 48" in log()
    assert "Waiting for LocalLeads credits: needs 48, 40 available" in log()
    assert "Enough LocalLeads credits: needs 48, 50 available" in log()
    assert sandbox.request_count(TRANSACTIONS_PATH) == 1
    assert sandbox.request_count(BALANCE_PATH) == 2


def test_a_transient_error_while_estimating_keeps_a_poke_sensor_waiting(sandbox):
    wait = history_sensor(sandbox)
    ti = FakeTI()
    sandbox.fail_next(503, path=TRANSACTIONS_PATH)

    first, second = wait.poke({"ti": ti}), wait.poke({"ti": ti})

    assert (first.is_done, second.is_done) == (False, True)
    assert [k for k, _ in ti.pushed] == ["estimate"]
    assert [(r.path, r.status) for r in sandbox.requests] == [
        (TRANSACTIONS_PATH, 503),
        (TRANSACTIONS_PATH, 200),
        (BALANCE_PATH, 200),
    ]


def test_no_matching_history_fails_the_poke_before_any_balance_read(sandbox):
    from airflow_provider_localleads.estimates import CostFromHistory

    wait = sensor(estimated_cost=CostFromHistory("Lead search: Astronauts*"))
    with pytest.raises(exceptions.NoCostHistoryError, match="'Lead search: Astronauts\\*'"):
        wait.poke({"ti": FakeTI()})
    assert sandbox.request_count(BALANCE_PATH) == 0


def test_execute_resolves_afresh_each_time(sandbox):
    """Each run of the task (a try, or a reschedule in reschedule mode) resolves the estimate again."""
    wait = history_sensor(sandbox, deferrable=True)
    for _ in range(2):
        wait.execute({"ti": FakeTI()})  # 82 available >= 48: returns at the first check
    assert sandbox.request_count(TRANSACTIONS_PATH) == 2


def test_deferrable_resolves_before_deferring_and_execute_complete_logs_it_again(sandbox, capfd):
    wait = history_sensor(sandbox, deferrable=True)
    sandbox.set_balance(monthly=100, bonus=0, used=60)  # 40 available
    ti = FakeTI()

    with pytest.raises(TaskDeferred) as info:
        wait.execute({"ti": ti})

    deferred = info.value
    assert deferred.trigger.serialize()[1]["estimated_cost"] == 48  # the resolved number, not the object
    [(key, estimate)] = ti.pushed
    assert (key, estimate["cost"]) == ("estimate", 48)
    assert not deferred.kwargs
    assert sandbox.request_count(TRANSACTIONS_PATH) == 1
    assert sandbox.request_count(BALANCE_PATH) == 1

    sandbox.top_up(10)
    event = success_event(48, CreditBalance.from_api(sandbox.balance()))
    with captured_task_logs(capfd) as log:
        assert wait.execute_complete({"ti": ti}, event)["available_credits"] == 50
    assert ti.pulled == [{"task_ids": "wait", "key": "estimate", "map_indexes": -1}]
    assert f"Estimated cost: {estimate['description']}" in log()
    assert "Enough LocalLeads credits: needs 48, 50 available" in log()
    assert sandbox.request_count() == 2  # nothing resolved again


def test_execute_complete_says_so_when_the_estimate_is_gone(capfd):
    from airflow_provider_localleads.estimates import CostFromHistory

    event = success_event(48, FIFTY)
    with captured_task_logs(capfd) as log:
        sensor(estimated_cost=CostFromHistory("x*")).execute_complete({"ti": FakeTI()}, event)
    assert "not in XCom 'estimate' any more" in log()


def test_execute_complete_with_a_plain_cost_reads_no_xcom():
    ti = FakeTI()
    sensor().execute_complete({"ti": ti}, success_event(48, FIFTY))
    assert ti.pulled == []


def test_deferrable_plain_cost_defers_without_kwargs(sandbox):
    with pytest.raises(TaskDeferred) as info:
        sensor(estimated_cost=83, deferrable=True).execute({})
    assert not info.value.kwargs


def test_deferrable_transient_error_while_estimating_fails_the_try(sandbox):
    """There is no number to defer with: an ordinary failure (the task's retries apply), not a wait."""
    wait = history_sensor(sandbox, deferrable=True)
    sandbox.fail_next(503, path=TRANSACTIONS_PATH)
    with pytest.raises(exceptions.LocalLeadsServerError):
        wait.execute({"ti": FakeTI()})
    assert sandbox.request_count(BALANCE_PATH) == 0


def test_deferrable_no_history_with_soft_fail_skips(sandbox):
    from airflow_provider_localleads.estimates import CostFromHistory

    wait = sensor(estimated_cost=CostFromHistory("Lead search: Astronauts*"), deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException) as info:
        wait.execute({"ti": FakeTI()})
    assert isinstance(info.value.__cause__, exceptions.NoCostHistoryError)


# ------------------------------------------------------------------------------------------ forecast


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "x", "0", "-3", ""], ids=repr)
def test_bad_forecast_days_is_refused_when_the_dag_is_parsed(value):
    with pytest.raises(ValueError, match="forecast_days must be None") as info:
        sensor(forecast_days=value)
    assert repr(value) in str(info.value)
    assert "'wait'" in str(info.value)


def test_templated_forecast_days_is_checked_once_rendered_before_any_request(sandbox):
    wait = sensor(forecast_days="{{ params.days }}")
    wait.render_template_fields({"params": {"days": "soon"}})
    with pytest.raises(LocalLeadsInvalidArgumentError, match=r"forecast_days must be None.*'soon'"):
        wait.poke({"ti": FakeTI()})
    assert sandbox.request_count() == 0


def test_forecast_is_read_only_for_the_final_result(sandbox, capfd):
    wait = sensor(estimated_cost=83, forecast_days=30)
    ti = FakeTI()
    with captured_task_logs(capfd) as log:
        waiting = wait.poke({"ti": ti})
        assert sandbox.request_count(TRANSACTIONS_PATH) == 0  # waiting polls cost nothing extra
        sandbox.top_up(10)
        done = wait.poke({"ti": ti})

    assert (waiting.is_done, done.is_done) == (False, True)
    [(key, forecast)] = ti.pushed
    assert key == "forecast"
    assert forecast["days"] == 30
    assert forecast["available_credits"] == 92
    assert set(forecast) >= {"per_day", "runs_out_at", "next_reset_at", "spent"}
    assert sandbox.request_count(TRANSACTIONS_PATH) >= 1
    assert sandbox.request_count(BALANCE_PATH) == 2  # the forecast reuses the balance just read
    enough = [line for line in log().splitlines() if "Enough LocalLeads credits: needs 83, 92 available" in line]
    assert enough
    assert "; at the last 30 days' rate (" in enough[0] or "; nothing was spent in the last 30 days" in enough[0]


def test_a_forecast_that_cannot_be_read_is_a_warning_and_the_sensor_is_done(sandbox, capfd):
    sandbox.fail_next(503, path=TRANSACTIONS_PATH)
    ti = FakeTI()
    with captured_task_logs(capfd) as log:
        done = sensor(estimated_cost=10, forecast_days=7).poke({"ti": ti})
    assert done.is_done is True
    assert ti.pushed == []
    assert "LocalLeads usage forecast unavailable (the credit check stands)" in log()


def test_execute_complete_reads_the_forecast_on_the_worker(sandbox, capfd):
    ti = FakeTI()
    event = success_event(10, CreditBalance.from_api(sandbox.balance()))
    with captured_task_logs(capfd) as log:
        sensor(forecast_days=30).execute_complete({"ti": ti}, event)
    [(key, forecast)] = ti.pushed
    assert (key, forecast["available_credits"]) == ("forecast", 82)
    assert "LocalLeads credits forecast: " in log()
    assert sandbox.request_count(BALANCE_PATH) == 1  # get_usage: the balance, then the history
    assert sandbox.request_count(TRANSACTIONS_PATH) >= 1


def test_execute_complete_without_forecast_days_makes_no_request(sandbox):
    event = success_event(10, CreditBalance.from_api(sandbox.balance()))
    sensor().execute_complete({"ti": FakeTI()}, event)
    assert sandbox.request_count() == 0
