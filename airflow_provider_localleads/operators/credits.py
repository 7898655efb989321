"""CheckCreditsOperator: "can we afford this run?" as one task at the start of a DAG."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, SkipMixin

from airflow_provider_localleads.planning.arguments import ON_INSUFFICIENT_CHOICES, parse_optional_count
from airflow_provider_localleads.planning.tasks import check_low_credits_hook

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_localleads.estimates import CostFromHistory
    from airflow_provider_localleads.models import CreditBalance


class CheckCreditsOperator(BaseOperator, SkipMixin):
    """Check that the LocalLeads balance covers ``estimated_cost`` before paid-for work starts.

    Makes one balance request per run (a :class:`~airflow_provider_localleads.estimates.CostFromHistory`
    cost also reads the history pages it needs). With enough credits the task succeeds and returns
    ``CreditBalance.to_dict()`` (XCom ``return_value``); an estimate from the history is logged and
    pushed as XCom ``estimate`` (its cost, pattern and basis). Without:

    * ``on_insufficient="fail"`` (default): the task fails *without retrying* (retrying would not
      make credits appear) with a message saying what is needed, what is available and when
      credits reset.
    * ``on_insufficient="skip"``: like ``ShortCircuitOperator``, this task succeeds and every
      downstream task is skipped, whatever its trigger rule; the balance is still pushed to XCom.

    A wrong API key fails without retrying; transient API trouble (after the hook's own retries)
    is an ordinary failure, so the task's ``retries`` apply.

    ``forecast_days`` (off by default: it reads the history back that far, extra requests) adds the
    recent spending rate and the date the credits run out at it to the messages, and pushes
    ``CreditUsage.to_dict()`` as XCom ``forecast``; if that read fails, a warning says so and the
    check's outcome stands.

    ``warn_below``: when ``available - cost < warn_below`` (also when there is not enough at all),
    a warning is logged, the ``localleads.low_credits.<conn>`` metric is counted, and
    ``on_low_credits`` is called once, before the task succeeds (or fails or skips). It may be an
    Airflow notifier (e.g. the Slack or SMTP providers' ``SlackNotifier``/``SmtpNotifier``), called
    with the task context plus ``localleads_balance`` (the balance dict) and ``localleads_low_credits``
    (``remaining``, ``estimated_cost``, ``warn_below``, ``conn_id``) for its templates, or any
    callable, called with the ``CreditBalance``. A failing callback is logged and the task still
    succeeds: the run can afford its work, and a broken alert channel must not stop it.

    :param estimated_cost: credits the run will need (templated; must render to a whole number >= 0),
        or a ``CostFromHistory`` that estimates it from the transactions of similar runs.
    :param on_insufficient: ``"fail"`` or ``"skip"``.
    :param localleads_conn_id: Airflow connection of type ``localleads`` (templated, as in the
        official providers: e.g. ``"{{ params.account }}"`` picks the account per run).
    :param forecast_days: None (off) or the window of the forecast in days, >= 1 (templated).
    :param warn_below: None (off) or credits, >= 0, that should be left after this run (templated).
    :param on_low_credits: a notifier or callable for ``warn_below`` (see above).
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
        if on_insufficient not in ON_INSUFFICIENT_CHOICES:
            raise ValueError(f"{owner}: on_insufficient must be 'fail' or 'skip', got {on_insufficient!r}")
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
        from airflow_provider_localleads._compat import skip_downstream
        from airflow_provider_localleads.exceptions import InsufficientCreditsError
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
        from airflow_provider_localleads.planning.check import (
            enough_message,
            insufficient_credits_message,
            shortfall_message,
        )
        from airflow_provider_localleads.planning.metrics import emit_credit_gauges
        from airflow_provider_localleads.planning.tasks import notify_low_credits, read_forecast, resolve_task_cost

        # Rendered arguments are checked before any request.
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
