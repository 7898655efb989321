"""CheckCreditsOperator, branch by branch: ``execute`` called directly against the sandbox (no DAG run).

The context holds only what the operator reads: the task itself (a real operator in a real, unrun DAG,
so ``get_flat_relatives`` walks a real graph), a task instance that records ``xcom_push``, and the
dag run 2.11's ``skip`` needs. ``skip`` itself is replaced by a recorder: the real one writes task
states (2.11: the metadata database; 3.x: the supervisor), which tests/dagrun proves end to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow import __version__ as airflow_version
from airflow.providers.common.compat.sdk import DAG, AirflowFailException, BaseOperator
from packaging.version import Version

from airflow_provider_localleads.exceptions import InsufficientCreditsError, LocalLeadsInvalidArgumentError
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.operators.credits import CheckCreditsOperator
from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer

START = datetime(2024, 1, 1, tzinfo=UTC)
AIRFLOW_3 = Version(Version(airflow_version).base_version).major >= 3


class Work(BaseOperator):
    def execute(self, context: Any) -> None:
        raise AssertionError("a downstream task must never run in these tests")


@dataclass
class FakeTI:
    """Records what the operator does with its task instance, in order (shared with the skip recorder)."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    map_index: int = -1

    def xcom_push(self, key: str, value: Any) -> None:
        self.calls.append(("xcom_push", key, value))


@dataclass
class FakeDagRun:
    execution_date: datetime = START


def context_for(op: CheckCreditsOperator) -> dict[str, Any]:
    return {"task": op, "ti": FakeTI(), "dag_run": FakeDagRun()}


def record_skip(monkeypatch: pytest.MonkeyPatch, op: CheckCreditsOperator, ti: FakeTI) -> None:
    def skip(**kwargs: Any) -> None:
        ti.calls.append(("skip", kwargs))

    monkeypatch.setattr(op, "skip", skip)


def expected_balance(sandbox: SandboxServer) -> dict[str, Any]:
    return CreditBalance.from_api(sandbox.balance()).to_dict()


# ------------------------------------------------------------------------------------- enough credits


@pytest.mark.parametrize("cost", [0, 50, 82, "50", " 50 ", "82"], ids=repr)
def test_enough_credits_returns_the_balance(localleads_sandbox, localleads_sandbox_connection, cost):
    op = CheckCreditsOperator(task_id="check", estimated_cost=cost, on_insufficient="skip")
    context = context_for(op)

    result = op.execute(context)

    assert result == expected_balance(localleads_sandbox)
    assert result["available_credits"] == 82
    assert context["ti"].calls == []  # nothing pushed by hand, nothing skipped
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert localleads_sandbox.request_count() == 1


# --------------------------------------------------------------------------------- not enough: fail


def test_not_enough_fails_without_retry_and_says_why(localleads_sandbox, localleads_sandbox_connection):
    op = CheckCreditsOperator(task_id="check", estimated_cost=83)
    context = context_for(op)
    next_reset = CreditBalance.from_api(localleads_sandbox.balance()).next_reset_at.date().isoformat()

    with pytest.raises(InsufficientCreditsError) as info:
        op.execute(context)

    assert isinstance(info.value, AirflowFailException)  # Airflow does not retry it
    message = str(info.value)
    assert "needs 83 credits" in message
    assert "82 available" in message
    assert f"next reset {next_reset}" in message
    assert "on_insufficient='skip'" in message  # what to do instead
    assert context["ti"].calls == []
    assert localleads_sandbox.request_count() == 1


# --------------------------------------------------------------------------------- not enough: skip


def test_not_enough_skip_pushes_the_balance_then_skips_every_downstream_task(
    localleads_sandbox, localleads_sandbox_connection, monkeypatch
):
    with DAG("op_unit_skip", schedule=None, start_date=START, catchup=False):
        op = CheckCreditsOperator(task_id="check", estimated_cost=83, on_insufficient="skip")
        level1, level2 = Work(task_id="level1"), Work(task_id="level2")
        all_done = Work(task_id="all_done", trigger_rule="all_done")
        cleanup = Work(task_id="cleanup").as_teardown()
        op >> level1 >> level2 >> cleanup
        op >> all_done
        Work(task_id="unrelated")
    context = context_for(op)
    ti = context["ti"]
    record_skip(monkeypatch, op, ti)

    result = op.execute(context)

    balance = expected_balance(localleads_sandbox)
    assert result == balance
    # Pushed first: on Airflow 3 the real skip() raises, so the return value would never reach XCom.
    assert [call[0] for call in ti.calls] == ["xcom_push", "skip"]
    assert ti.calls[0] == ("xcom_push", "return_value", balance)
    kwargs = ti.calls[1][1]
    assert sorted(t.task_id for t in kwargs.pop("tasks")) == ["all_done", "level1", "level2"]  # not the teardown
    if AIRFLOW_3:
        assert kwargs == {"ti": ti}
    else:
        assert kwargs == {"dag_run": context["dag_run"], "execution_date": START, "map_index": -1}
    assert localleads_sandbox.request_count() == 1


def test_not_enough_skip_without_downstream_tasks_still_pushes_the_balance(
    localleads_sandbox, localleads_sandbox_connection, monkeypatch
):
    op = CheckCreditsOperator(task_id="check", estimated_cost=83, on_insufficient="skip")
    context = context_for(op)
    record_skip(monkeypatch, op, context["ti"])

    assert op.execute(context) == expected_balance(localleads_sandbox)

    assert context["ti"].calls == [("xcom_push", "return_value", expected_balance(localleads_sandbox))]


# ------------------------------------------------------------------------------------- bad arguments


BAD_COSTS = ["abc", "-5", "1.5", True, False, 1.5, None, -5, "", " 7 x", "٣", "12 credits", [5]]


@pytest.mark.parametrize("cost", BAD_COSTS, ids=ascii)
def test_bad_literal_cost_is_refused_when_the_dag_is_parsed(localleads_sandbox, cost):
    with pytest.raises(ValueError, match="estimated_cost must render to a non-negative whole number") as info:
        CheckCreditsOperator(task_id="check_cost", estimated_cost=cost)

    assert not isinstance(info.value, AirflowFailException)  # a DAG that does not load, not a failed task
    message = str(info.value)
    assert repr(cost) in message
    assert "'check_cost'" in message
    assert localleads_sandbox.request_count() == 0


@pytest.mark.parametrize("cost", BAD_COSTS, ids=ascii)
def test_bad_rendered_cost_fails_before_any_request(localleads_sandbox, localleads_sandbox_connection, cost):
    op = CheckCreditsOperator(task_id="check_cost", estimated_cost="{{ params.cost }}")
    op.estimated_cost = cost  # what rendering assigns (a native-object DAG renders to any type)

    with pytest.raises(LocalLeadsInvalidArgumentError) as info:
        op.execute(context_for(op))

    assert isinstance(info.value, AirflowFailException)
    message = str(info.value)
    assert "estimated_cost" in message
    assert repr(cost) in message
    assert "'check_cost'" in message
    assert localleads_sandbox.request_count() == 0


def test_templates_cost_from_history_and_xcom_args_are_checked_when_the_task_runs(localleads_sandbox):
    from airflow_provider_localleads.estimates import CostFromHistory

    with DAG("op_unit_deferred_costs", schedule=None, start_date=START, catchup=False):
        upstream = Work(task_id="estimate")
        for task_id, cost in [
            ("template", "{{ params.cost }}"),
            ("statement", "{% if params.big %}500{% else %}5{% endif %}"),
            ("history", CostFromHistory("Lead search: *")),
            ("xcom", upstream.output),
        ]:
            assert CheckCreditsOperator(task_id=task_id, estimated_cost=cost).estimated_cost is cost
    assert localleads_sandbox.request_count() == 0


@pytest.mark.parametrize("value", ["bogus", "FAIL", "", None], ids=repr)
def test_bad_on_insufficient_is_refused_at_construction(localleads_sandbox, value):
    with pytest.raises(ValueError, match="on_insufficient must be 'fail' or 'skip'") as info:
        CheckCreditsOperator(task_id="check_mode", estimated_cost=1, on_insufficient=value)
    assert repr(value) in str(info.value)
    assert "'check_mode'" in str(info.value)
    assert localleads_sandbox.request_count() == 0


# ------------------------------------------------------------------------------------------ templates


def test_conn_id_and_cost_are_rendered_before_the_request(localleads_sandbox, monkeypatch):
    """``localleads_conn_id`` is a template field: the rendered id is the connection used."""
    monkeypatch.setenv("AIRFLOW_CONN_LOCALLEADS_FROM_PARAMS", localleads_sandbox.connection_json())
    op = CheckCreditsOperator(
        task_id="check", estimated_cost="{{ params.cost }}", localleads_conn_id="{{ params.conn }}"
    )
    assert set(op.template_fields) == {"estimated_cost", "localleads_conn_id", "forecast_days", "warn_below"}
    context = {**context_for(op), "params": {"conn": "localleads_from_params", "cost": 60}}

    op.render_template_fields(context)

    assert (op.localleads_conn_id, op.estimated_cost) == ("localleads_from_params", "60")
    assert op.execute(context) == expected_balance(localleads_sandbox)
    assert localleads_sandbox.request_count() == 1


# ------------------------------------------------------------------------------------- cost from history


def test_cost_from_history_is_estimated_logged_and_pushed(
    localleads_sandbox, localleads_sandbox_connection, caplog, capsys
):
    from airflow_provider_localleads.estimates import CostFromHistory

    now = datetime.now(UTC)
    for minutes, amount in ((30, -12), (20, -9), (10, -10)):
        localleads_sandbox.add_transaction(
            "DEDUCTION",
            amount,
            "Lead search: Dentists in Austin",
            now.replace(microsecond=0) - timedelta(minutes=minutes),
        )
    op = CheckCreditsOperator(task_id="check", estimated_cost=CostFromHistory("Lead search: Dentists*"))
    context = context_for(op)

    with caplog.at_level("INFO"):
        result = op.execute(context)

    assert result == expected_balance(localleads_sandbox)  # return_value stays the balance
    [(what, key, estimate)] = context["ti"].calls
    assert (what, key) == ("xcom_push", "estimate")
    assert estimate["cost"] == 15  # ceil(max 12 * 1.2)
    assert estimate["pattern"] == "Lead search: Dentists*"
    assert estimate["description"].startswith("max of ")  # the seed history holds a matching run too
    assert estimate["description"].endswith("matching 'Lead search: Dentists*' is 12 credits, +20% = 15")
    # The task log says what the estimate rests on (structlog prints on Airflow 3, stdlib logging on 2.11).
    assert "is 12 credits, +20% = 15" in capsys.readouterr().out + caplog.text
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_cost_from_history_that_is_more_than_available_fails_with_the_shared_message(
    localleads_sandbox, localleads_sandbox_connection
):
    from airflow_provider_localleads.estimates import CostFromHistory

    localleads_sandbox.add_transaction(
        "DEDUCTION", -80, "Lead search: everything", datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    )
    op = CheckCreditsOperator(task_id="check", estimated_cost=CostFromHistory("Lead search: everything"))
    with pytest.raises(InsufficientCreditsError) as info:
        op.execute(context_for(op))
    assert str(info.value).startswith("Not enough LocalLeads credits: needs 96 credits, 82 available")
    assert isinstance(info.value, AirflowFailException)


# ------------------------------------------------------------------------------------------ forecast


@pytest.mark.parametrize("field", ["forecast_days", "warn_below"])
@pytest.mark.parametrize("value", [-1, 1.5, True, "x", "-3", "", [3]], ids=repr)
def test_bad_forecast_days_or_warn_below_is_refused_when_the_dag_is_parsed(field, value):
    with pytest.raises(ValueError, match=f"{field} must be None") as info:
        CheckCreditsOperator(task_id="check_args", estimated_cost=1, **{field: value})
    assert repr(value) in str(info.value)
    assert "'check_args'" in str(info.value)


def test_forecast_days_zero_is_refused_but_warn_below_zero_is_allowed():
    with pytest.raises(ValueError, match=r"forecast_days must be None .* positive whole number"):
        CheckCreditsOperator(task_id="check", estimated_cost=1, forecast_days=0)
    assert CheckCreditsOperator(task_id="check", estimated_cost=1, warn_below=0).warn_below == 0


@pytest.mark.parametrize("field", ["forecast_days", "warn_below"])
def test_templated_arguments_are_checked_once_rendered_before_any_request(
    localleads_sandbox, localleads_sandbox_connection, field
):
    op = CheckCreditsOperator(task_id="check", estimated_cost=1, **{field: "{{ params.n }}"})
    context = {**context_for(op), "params": {"n": "many"}}
    op.render_template_fields(context)
    with pytest.raises(LocalLeadsInvalidArgumentError, match=f"{field} must be None.*'many'"):
        op.execute(context)
    assert localleads_sandbox.request_count() == 0


def test_forecast_days_adds_the_rate_to_the_success_line_and_xcom(
    localleads_sandbox, localleads_sandbox_connection, caplog, capsys
):
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

    op = CheckCreditsOperator(task_id="check", estimated_cost=10, forecast_days="30")
    context = context_for(op)

    with caplog.at_level("INFO"):
        result = op.execute(context)

    assert result == expected_balance(localleads_sandbox)
    [(what, key, forecast)] = context["ti"].calls
    assert (what, key) == ("xcom_push", "forecast")
    with LocalLeadsHook() as hook:
        usage = hook.get_usage(30).to_dict()
    for same in ("spent", "per_day", "deductions", "days", "available_credits", "next_reset_at"):
        assert forecast[same] == usage[same]
    assert localleads_sandbox.request_count(BALANCE_PATH) == 2  # the check's, then get_usage's above
    out = capsys.readouterr().out + caplog.text
    assert "Enough LocalLeads credits: needs 10, 82 available" in out
    assert "; at the last 30 days' rate (" in out


def test_forecast_days_is_in_the_insufficient_message(localleads_sandbox, localleads_sandbox_connection):
    op = CheckCreditsOperator(task_id="check", estimated_cost=83, forecast_days=30)
    with pytest.raises(InsufficientCreditsError) as info:
        op.execute(context_for(op))
    message = str(info.value)
    assert message.startswith("Not enough LocalLeads credits: needs 83 credits, 82 available")
    assert "; at the last 30 days' rate (" in message
    assert message.endswith("to skip/wait instead of failing")


def test_without_forecast_days_the_history_is_not_read(localleads_sandbox, localleads_sandbox_connection):
    op = CheckCreditsOperator(task_id="check", estimated_cost=10)
    op.execute(context_for(op))
    assert localleads_sandbox.request_count() == localleads_sandbox.request_count(BALANCE_PATH) == 1


# ---------------------------------------------------------------------------------------- warn_below


class RecordingNotifier:
    """Built lazily on the notifier base class of the running Airflow (3.x: the Task SDK's; 2.11: classic)."""

    @staticmethod
    def make(message: str = "{{ localleads_balance.available_credits }} left") -> Any:
        from airflow.providers.common.compat.notifier import BaseNotifier

        class Notifier(BaseNotifier):  # type: ignore[misc, valid-type]
            template_fields = ("message",)
            sent: list[str] = []

            def __init__(self, message: str) -> None:
                super().__init__()
                self.message = message

            def notify(self, context: Any) -> None:
                type(self).sent.append(self.message)

        return Notifier(message)


@pytest.mark.parametrize(("cost", "low"), [(62, False), (63, True), (0, False), (82, True)])
def test_warn_below_calls_a_callable_once_with_the_balance(
    localleads_sandbox, localleads_sandbox_connection, caplog, capsys, cost, low
):
    seen: list[CreditBalance] = []
    op = CheckCreditsOperator(task_id="check", estimated_cost=cost, warn_below=20, on_low_credits=seen.append)

    with caplog.at_level("INFO"):
        assert op.execute(context_for(op)) == expected_balance(localleads_sandbox)  # still succeeds

    out = capsys.readouterr().out + caplog.text
    if low:
        assert [b.available_credits for b in seen] == [82]
        assert f"Low LocalLeads credits: {82 - cost} left after this run's {cost} (warn_below=20)" in out
    else:
        assert seen == []
        assert "Low LocalLeads credits" not in out
    assert localleads_sandbox.request_count() == 1


def test_warn_below_renders_a_notifier_with_the_balance_in_its_context(
    localleads_sandbox, localleads_sandbox_connection
):
    notifier = RecordingNotifier.make(
        "{{ localleads_balance.available_credits }} left, {{ localleads_low_credits.remaining }} after"
    )
    notifier.sent.clear()
    with DAG("op_unit_notifier", schedule=None, start_date=START, catchup=False):
        op = CheckCreditsOperator(task_id="check", estimated_cost=70, warn_below=20, on_low_credits=notifier)
    context = {**context_for(op), "dag": op.dag}

    op.execute(context)
    op.execute(context)

    assert notifier.sent == ["82 left, 12 after"] * 2  # once per run, each rendered from the template
    assert (
        notifier.message
        == "{{ localleads_balance.available_credits }} left, {{ localleads_low_credits.remaining }} after"
    )


def test_a_failing_callback_is_logged_and_the_task_succeeds(
    localleads_sandbox, localleads_sandbox_connection, caplog, capsys
):
    def broken(balance: CreditBalance) -> None:
        raise RuntimeError("alert channel down")

    op = CheckCreditsOperator(task_id="check", estimated_cost=70, warn_below=20, on_low_credits=broken)
    with caplog.at_level("INFO"):
        assert op.execute(context_for(op)) == expected_balance(localleads_sandbox)
    out = capsys.readouterr().out + caplog.text
    assert "on_low_credits failed; the task goes on" in out
    assert "alert channel down" in out


def test_not_enough_also_warns_then_fails(localleads_sandbox, localleads_sandbox_connection):
    seen: list[CreditBalance] = []
    op = CheckCreditsOperator(task_id="check", estimated_cost=83, warn_below=0, on_low_credits=seen.append)
    with pytest.raises(InsufficientCreditsError):
        op.execute(context_for(op))
    assert [b.available_credits for b in seen] == [82]


def test_warn_below_sends_the_low_credits_metric(localleads_sandbox, localleads_sandbox_connection, monkeypatch):
    from airflow.providers.common.compat.sdk import Stats

    counted: list[str] = []
    monkeypatch.setattr(Stats, "incr", lambda name, *args, **kwargs: counted.append(name), raising=False)
    op = CheckCreditsOperator(task_id="check", estimated_cost=70, warn_below=20)
    op.execute(context_for(op))
    assert counted == ["localleads.low_credits.localleads_default"]


def test_a_failing_metrics_backend_never_fails_the_task(localleads_sandbox, localleads_sandbox_connection, monkeypatch):
    from airflow.providers.common.compat.sdk import Stats

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("statsd down")

    monkeypatch.setattr(Stats, "incr", broken, raising=False)
    op = CheckCreditsOperator(task_id="check", estimated_cost=70, warn_below=20)
    assert op.execute(context_for(op)) == expected_balance(localleads_sandbox)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_low_credits": print}, "on_low_credits is only called below warn_below"),
        ({"on_low_credits": "slack", "warn_below": 5}, "on_low_credits must be an Airflow notifier"),
    ],
)
def test_bad_on_low_credits_is_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CheckCreditsOperator(task_id="check", estimated_cost=1, **kwargs)


def test_a_forecast_that_cannot_be_read_is_a_warning_and_the_check_stands(
    localleads_sandbox, localleads_sandbox_connection, caplog, capsys
):
    from airflow_provider_localleads.sandbox import TRANSACTIONS_PATH

    localleads_sandbox.malformed_next("html", path=TRANSACTIONS_PATH)
    op = CheckCreditsOperator(task_id="check", estimated_cost=10, forecast_days=30)
    context = context_for(op)
    with caplog.at_level("INFO"):
        assert op.execute(context) == expected_balance(localleads_sandbox)
    assert context["ti"].calls == []  # no forecast XCom
    out = capsys.readouterr().out + caplog.text
    assert "LocalLeads usage forecast unavailable (the credit check stands)" in out
    assert "Enough LocalLeads credits: needs 10, 82 available" in out
