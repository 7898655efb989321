"""CheckCreditsOperator: "can we afford this run?" as one task at the start of a DAG."""

from __future__ import annotations

# execute() imports the hook: DAG files import this module, and parsing them must not pay for its HTTP stack.
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, SkipMixin

from airflow_provider_localleads._compat import skip_downstream
from airflow_provider_localleads.estimates import CostFromHistory
from airflow_provider_localleads.exceptions import InsufficientCreditsError
from airflow_provider_localleads.planning.arguments import (
    check_estimated_cost,
    check_low_credits_hook,
    check_on_insufficient,
    parse_optional_count,
)
from airflow_provider_localleads.planning.check import enough_message, insufficient_credits_message, shortfall_message
from airflow_provider_localleads.planning.metrics import emit_credit_gauges
from airflow_provider_localleads.planning.tasks import notify_low_credits, read_forecast, resolve_task_cost

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_localleads.models import CreditBalance


class CheckCreditsOperator(BaseOperator, SkipMixin):
    """Check that the LocalLeads balance covers ``estimated_cost`` before paid-for work starts, and return
    ``CreditBalance.to_dict()`` (docs/operator.md, docs/planning.md). Too few credits fail *without
    retrying* (retrying would not make credits appear), or skip everything downstream.

    :param estimated_cost: credits the run will need, a whole number >= 0 (a literal is checked when
        the DAG is parsed, a template once rendered), or a ``CostFromHistory``.
    :param on_insufficient: ``"fail"`` or ``"skip"`` (like ``ShortCircuitOperator``: this task succeeds,
        every downstream task is skipped whatever its trigger rule).
    :param localleads_conn_id: Airflow connection of type ``localleads`` (templated: e.g.
        ``"{{ params.account }}"`` picks the account per run).
    :param forecast_days: None (off) or the window of the forecast in days, >= 1 (templated): the recent
        spending rate in the messages and XCom ``forecast``.
    :param warn_below: None (off) or credits, >= 0, that should be left after this run (templated).
    :param on_low_credits: an Airflow notifier or a callable taking the ``CreditBalance``, called once
        below ``warn_below``; if it fails, the task goes on (a broken alert channel must not stop a run
        that can afford its work).
    """

    template_fields: Sequence[str] = ("estimated_cost", "localleads_conn_id", "forecast_days", "warn_below")
    ui_color = "#e8f4ea"
    inherits_from_skipmixin = True

    def __init__(
        self,
        *,
        estimated_cost: int | str | CostFromHistory,
        on_insufficient: str = "fail",
        localleads_conn_id: str = "localleads_default",
        forecast_days: int | str | None = None,
        warn_below: int | str | None = None,
        on_low_credits: Callable[[CreditBalance], Any] | Any | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = f"CheckCreditsOperator {self.task_id!r}"
        check_estimated_cost(estimated_cost, task_id=self.task_id)
        check_on_insufficient(on_insufficient, owner=owner)
        parse_optional_count(forecast_days, field="forecast_days", minimum=1, task_id=self.task_id, at_parse=True)
        parse_optional_count(warn_below, field="warn_below", minimum=0, task_id=self.task_id, at_parse=True)
        check_low_credits_hook(on_low_credits, warn_below, owner)
        self.estimated_cost = estimated_cost
        self.on_insufficient = on_insufficient
        self.localleads_conn_id = localleads_conn_id
        self.forecast_days = forecast_days
        self.warn_below = warn_below
        self.on_low_credits = on_low_credits

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        days = parse_optional_count(self.forecast_days, field="forecast_days", minimum=1, task_id=self.task_id)
        warn_below = parse_optional_count(self.warn_below, field="warn_below", minimum=0, task_id=self.task_id)
        with LocalLeadsHook(self.localleads_conn_id) as hook:
            cost = resolve_task_cost(self, hook, context)
            balance = hook.get_balance()
            forecast = read_forecast(self, hook, context, days, balance)
        emit_credit_gauges(self.localleads_conn_id, balance.available_credits, cost)
        if warn_below is not None:
            notify_low_credits(self, context, balance, cost, warn_below, self.on_low_credits)
        result = balance.to_dict()

        if balance.can_afford(cost):
            self.log.info("%s", enough_message(cost, balance, forecast))
            return result

        shortfall = shortfall_message(cost, balance, forecast)
        if self.on_insufficient == "fail":
            raise InsufficientCreditsError(insufficient_credits_message(cost, balance, forecast))

        to_skip = [t for t in context["task"].get_flat_relatives(upstream=False) if not t.is_teardown]
        self.log.warning("%s. Skipping %d downstream task(s).", shortfall, len(to_skip))
        # Airflow 3's skip() ends the task by raising, so the return value would never reach XCom.
        context["ti"].xcom_push(key="return_value", value=result)
        skip_downstream(self, context, to_skip)
        return result
