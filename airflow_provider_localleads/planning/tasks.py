"""What CheckCreditsOperator and CreditsSensor do around the credit check: the estimate, the forecast,
the low-credit warning.

In one place so the two tasks log, push and notify the same way. Each function takes the running task
(for its log, id and connection) and the task's context (for XCom).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.models import CreditBalance, CreditUsage

__all__ = ["check_low_credits_hook", "notify_low_credits", "read_forecast", "report_estimate", "resolve_task_cost"]

#: Keys added to the task context a notifier gets, for its templates (``{{ localleads_balance.available_credits }}``).
BALANCE_KEY = "localleads_balance"
LOW_CREDITS_KEY = "localleads_low_credits"


def resolve_task_cost(task: Any, hook: LocalLeadsHook, context: Any) -> int:
    """The task's ``estimated_cost`` as a number; a CostFromHistory estimate is logged and pushed first."""
    from airflow_provider_localleads.estimates import resolve_cost

    cost, estimate = resolve_cost(task.estimated_cost, hook, task.task_id)  # a bad number: no request
    if estimate is not None:
        report_estimate(task, context, estimate.to_dict())
    return cost


def report_estimate(task: Any, context: Any, estimate: dict[str, Any]) -> None:
    """Log what the estimate rests on and push it as XCom ``estimate`` (``CostEstimate.to_dict()``)."""
    task.log.info("Estimated cost: %s", estimate["description"])
    context["ti"].xcom_push(key="estimate", value=estimate)


def read_forecast(
    task: Any, hook: LocalLeadsHook, context: Any, days: int | None, balance: CreditBalance | None = None
) -> CreditUsage | None:
    """The usage over the last ``days`` days (None when ``forecast_days`` is off), pushed as XCom ``forecast``.

    With ``balance`` (just read for the check) only the history back to ``days`` ago is read;
    without, one more balance read too (``get_usage``). The forecast is information: if it cannot be
    read, the check's outcome stands and a warning says why, rather than failing (or, for the
    sensor, prolonging) a check that has already been answered.
    """
    if days is None:
        return None
    from airflow_provider_localleads.exceptions import LocalLeadsError
    from airflow_provider_localleads.planning.usage import summarize_usage, utc_moment

    try:
        if balance is None:
            usage = hook.get_usage(days)
        else:
            usage = summarize_usage(balance, hook.iter_transactions(), days, utc_moment(None))
    except LocalLeadsError as err:
        task.log.warning("LocalLeads usage forecast unavailable (the credit check stands): %s", err)
        return None
    context["ti"].xcom_push(key="forecast", value=usage.to_dict())
    return usage


def check_low_credits_hook(on_low_credits: object, warn_below: object, owner: str) -> None:
    """Parse-time check: ``on_low_credits`` is a notifier or callable, and only given with ``warn_below``."""
    if on_low_credits is None:
        return
    if not callable(on_low_credits):
        raise ValueError(
            f"{owner}: on_low_credits must be an Airflow notifier (e.g. SlackNotifier(...)) or a callable taking "
            f"the CreditBalance, got {on_low_credits!r} ({type(on_low_credits).__name__})"
        )
    if warn_below is None:
        raise ValueError(f"{owner}: on_low_credits is only called below warn_below; set warn_below=<credits> too")


def notify_low_credits(
    task: Any, context: Any, balance: CreditBalance, cost: int, warn_below: int, on_low_credits: Any
) -> None:
    """Warn (log and metric) when ``available - cost < warn_below``, and call ``on_low_credits`` once.

    A notifier (``BaseNotifier``) is called with the task context, to which ``localleads_balance``
    (the balance dict) and ``localleads_low_credits`` (cost, remaining, warn_below, conn id) are added
    for its templates; it renders a copy, so the DAG's notifier object keeps its templates for the
    next run. Any other callable gets the ``CreditBalance``. A failing callback is logged and does
    not fail the task: the warning is about credits, and the check itself has its answer.
    """
    from airflow_provider_localleads.planning.metrics import emit_low_credits

    remaining = balance.available_credits - cost
    if remaining >= warn_below:
        return
    task.log.warning(
        "Low LocalLeads credits: %d left after this run's %d (warn_below=%d); %s",
        remaining,
        cost,
        warn_below,
        balance.summary(),
    )
    emit_low_credits(task.localleads_conn_id)
    if on_low_credits is None:
        return
    try:
        from airflow.providers.common.compat.notifier import BaseNotifier

        if isinstance(on_low_credits, BaseNotifier):
            context[BALANCE_KEY] = balance.to_dict()
            context[LOW_CREDITS_KEY] = {
                "conn_id": task.localleads_conn_id,
                "available_credits": balance.available_credits,
                "estimated_cost": cost,
                "remaining": remaining,
                "warn_below": warn_below,
            }
            copy.copy(on_low_credits)(context)
        else:
            on_low_credits(balance)
    except Exception:
        task.log.exception("on_low_credits failed; the task goes on (the credit check itself has its answer)")
