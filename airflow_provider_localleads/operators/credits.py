"""CheckCreditsOperator: "can we afford this run?" as one task at the start of a DAG."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, SkipMixin

from airflow_provider_localleads._arguments import ON_INSUFFICIENT_CHOICES

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_localleads.estimates import CostFromHistory


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

    :param estimated_cost: credits the run will need (templated; must render to a whole number >= 0),
        or a ``CostFromHistory`` that estimates it from the transactions of similar runs.
    :param on_insufficient: ``"fail"`` or ``"skip"``.
    :param localleads_conn_id: Airflow connection of type ``localleads`` (templated, as in the
        official providers: e.g. ``"{{ params.account }}"`` picks the account per run).
    """

    template_fields: Sequence[str] = ("estimated_cost", "localleads_conn_id")
    ui_color = "#e8f4ea"
    inherits_from_skipmixin = True

    def __init__(
        self,
        *,
        estimated_cost: int | str | CostFromHistory,
        on_insufficient: str = "fail",
        localleads_conn_id: str = "localleads_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_insufficient not in ON_INSUFFICIENT_CHOICES:
            raise ValueError(
                f"CheckCreditsOperator {self.task_id!r}: on_insufficient must be 'fail' or 'skip', "
                f"got {on_insufficient!r}"
            )
        self.estimated_cost = estimated_cost
        self.on_insufficient = on_insufficient
        self.localleads_conn_id = localleads_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_localleads._compat import skip_downstream
        from airflow_provider_localleads._credit_check import insufficient_credits_message, shortfall_message
        from airflow_provider_localleads._metrics import emit_credit_gauges
        from airflow_provider_localleads.estimates import resolve_cost
        from airflow_provider_localleads.exceptions import InsufficientCreditsError
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        with LocalLeadsHook(self.localleads_conn_id) as hook:
            cost, estimate = resolve_cost(self.estimated_cost, hook, self.task_id)  # a bad number: no request
            if estimate is not None:
                self.log.info("Estimated cost: %s", estimate.describe())
                context["ti"].xcom_push(key="estimate", value=estimate.to_dict())
            balance = hook.get_balance()
        emit_credit_gauges(self.localleads_conn_id, balance.available_credits, cost)
        result = balance.to_dict()

        if balance.can_afford(cost):
            self.log.info("Enough LocalLeads credits: needs %d, %s", cost, balance.summary())
            return result

        shortfall = shortfall_message(cost, balance)
        if self.on_insufficient == "fail":
            raise InsufficientCreditsError(insufficient_credits_message(cost, balance))

        to_skip = [t for t in context["task"].get_flat_relatives(upstream=False) if not t.is_teardown]
        self.log.warning("%s. Skipping %d downstream task(s).", shortfall, len(to_skip))
        # Airflow 3's skip() ends the task by raising, so the return value would never reach XCom.
        context["ti"].xcom_push(key="return_value", value=result)
        skip_downstream(self, context, to_skip)
        return result
