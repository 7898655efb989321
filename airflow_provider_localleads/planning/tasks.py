"""What CheckCreditsOperator and CreditsSensor do around the credit check (estimate, forecast, low-credit
warning), in one place so the two tasks log, push and notify the same way."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.notifier import BaseNotifier

from airflow_provider_localleads.estimates import resolve_cost
from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.planning.metrics import emit_low_credits
from airflow_provider_localleads.planning.usage import summarize_usage, utc_moment

if TYPE_CHECKING:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.models import CreditBalance, CreditUsage


def resolve_task_cost(task: Any, hook: LocalLeadsHook, context: Any) -> int:
    cost, estimate = resolve_cost(task.estimated_cost, hook, task.task_id)  # a bad number: no request
    if estimate is not None:
        task.log.info("Estimated cost: %s", estimate.describe())
        context["ti"].xcom_push(key="estimate", value=estimate.to_dict())
    return cost


def read_forecast(
    task: Any, hook: LocalLeadsHook, context: Any, days: int | None, balance: CreditBalance | None = None
) -> CreditUsage | None:
    """The usage over the last ``days`` days (None when off), pushed as XCom ``forecast``; the balance is read
    only when not given. The forecast is information: if it cannot be read, a warning says why rather
    than failing (or, for the sensor, prolonging) a check that has already been answered."""
    if days is None:
        return None
    try:
        if balance is None:
            balance = hook.get_balance()
        usage = summarize_usage(balance, hook.iter_transactions(), days, utc_moment(None))
    except LocalLeadsError as err:
        task.log.warning("LocalLeads usage forecast unavailable (the credit check stands): %s", err)
        return None
    context["ti"].xcom_push(key="forecast", value=usage.to_dict())
    return usage


def notify_low_credits(
    task: Any, context: Any, balance: CreditBalance, cost: int, warn_below: int, on_low_credits: Any
) -> None:
    """Warn (log and metric) when ``available - cost < warn_below``, and call ``on_low_credits`` once.

    A notifier renders a copy, so the DAG's notifier keeps its templates for the next run. A failing
    callback is logged and does not fail the task: the check itself has its answer.
    """
    remaining = balance.available_credits - cost
    if remaining >= warn_below:
        return
    warning = "Low LocalLeads credits: %d left after this run's %d (warn_below=%d); %s"
    task.log.warning(warning, remaining, cost, warn_below, balance.summary())
    emit_low_credits(task.localleads_conn_id)
    if on_low_credits is None:
        return
    try:
        if isinstance(on_low_credits, BaseNotifier):
            context["localleads_balance"] = balance.to_dict()
            context["localleads_low_credits"] = {
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
