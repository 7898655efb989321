"""CreditsSensor: wait until the LocalLeads balance covers a cost (poke, reschedule or deferrable)."""

from __future__ import annotations

# The hook (its HTTP stack, ~0.3 s) and the trigger module are imported where they are used: DAG files
# import this module, and parsing them must not pay for either.
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout, BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_localleads import exceptions
from airflow_provider_localleads.client.retry import is_transient
from airflow_provider_localleads.client.values import seconds
from airflow_provider_localleads.estimates import CostFromHistory
from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.planning.arguments import check_estimated_cost, parse_optional_count
from airflow_provider_localleads.planning.check import enough_message, timeout_message, waiting_message
from airflow_provider_localleads.planning.metrics import emit_credit_gauges
from airflow_provider_localleads.planning.tasks import read_forecast, resolve_task_cost

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.models import CreditBalance

DEFAULT_POKE_INTERVAL = 300.0


class CreditsSensor(BaseSensorOperator):
    """Wait until ``available_credits >= estimated_cost``; return the balance dict as XCom (docs/sensor.md).

    Credits change slowly (spending, top-ups, the monthly reset), so the default ``poke_interval``
    is 300 s: polling every few seconds only burns the API's rate limit. Every mode runs Airflow's
    ``BaseSensorOperator.execute`` (deferred: ``resume_execution``, which maps ``never_fail`` only from
    Airflow 3.1), so ``soft_fail``, ``never_fail``, ``silent_fail`` and ``timeout`` end a run as Airflow
    defines them. The trigger polls every ``poke_interval`` without ``exponential_backoff``: all triggers
    on one connection and interval share one poll, which needs a fixed interval.

    :param estimated_cost: credits needed (templated; must render to a whole number >= 0), or a
        ``CostFromHistory``.
    :param localleads_conn_id: Airflow connection of type ``localleads`` (templated).
    :param deferrable: wait in the triggerer instead of on a worker.
    :param forecast_days: None (off) or the forecast's window in days, >= 1 (templated); read once, for
        the final result, never while waiting.
    """

    template_fields: Sequence[str] = ("estimated_cost", "localleads_conn_id", "forecast_days")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        estimated_cost: int | str | CostFromHistory,
        localleads_conn_id: str = "localleads_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float | timedelta = DEFAULT_POKE_INTERVAL,
        forecast_days: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        check_estimated_cost(estimated_cost, task_id=self.task_id)
        parse_optional_count(forecast_days, field="forecast_days", minimum=1, task_id=self.task_id, at_parse=True)
        self.estimated_cost = estimated_cost
        self.localleads_conn_id = localleads_conn_id
        self.deferrable = deferrable
        self.forecast_days = forecast_days
        # This run of the task (reset by every execute()); the last balance is for the timeout message.
        self._started = 0.0
        self._resolved: int | None = None
        self._last_seen: CreditBalance | None = None

    def _forecast_days(self) -> int | None:
        return parse_optional_count(self.forecast_days, field="forecast_days", minimum=1, task_id=self.task_id)

    def _cost(self, hook: LocalLeadsHook, context: Context) -> int:
        """This run's cost, resolved at its first poke (once per try in poke mode, every poke in reschedule)."""
        if self._resolved is None:
            self._resolved = resolve_task_cost(self, hook, context)  # a bad number: no request
        return self._resolved

    def execute(self, context: Context) -> Any:
        self._started, self._resolved, self._last_seen = time.monotonic(), None, None
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:  # Airflow's own message says only how long it waited
            raise AirflowSensorTimeout(f"{timeout_message(self._resolved, self._last_seen)}: {err}") from err

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        days = self._forecast_days()
        try:
            with LocalLeadsHook(self.localleads_conn_id) as hook:
                cost = self._cost(hook, context)
                balance = hook.get_balance()
                done = balance.can_afford(cost)
                forecast = read_forecast(self, hook, context, days, balance) if done else None
        except LocalLeadsError as err:
            # The hook's own retry decision: transient means keep waiting (deferred: with a cost to wait for).
            if not is_transient(err) or (self.deferrable and self._resolved is None):
                raise
            self.log.warning("LocalLeads balance check failed (will check again): %s", err)
            return self._not_done()
        self._last_seen = balance
        emit_credit_gauges(self.localleads_conn_id, balance.available_credits, cost)
        if done:
            self.log.info("%s", enough_message(cost, balance, forecast))
            return PokeReturnValue(is_done=True, xcom_value=balance.to_dict())
        self.log.info("%s", waiting_message(cost, balance))
        return self._not_done()

    def _not_done(self) -> PokeReturnValue:
        if self.deferrable and self._resolved is not None:
            self._defer(self._resolved)
        return PokeReturnValue(is_done=False)

    def _defer(self, cost: int) -> None:
        """``defer`` raises TaskDeferred, a BaseException, so Airflow's loop (which maps ``Exception``s to end
        states) passes it through."""
        from airflow_provider_localleads.triggers.credits import CreditsTrigger

        left = max(0.0, seconds(self.timeout) - (time.monotonic() - self._started))
        self.defer(
            trigger=CreditsTrigger(
                estimated_cost=cost,
                # Already rendered (templates are rendered before execute): the trigger is stored
                # with the connection id this run uses, never with the template.
                localleads_conn_id=self.localleads_conn_id,
                poll_interval=seconds(self.poke_interval),
                end_at=time.time() + left,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=left),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """The trigger's error or timeout is raised for Airflow's ``resume_execution`` to map; anything but a
        well-formed event fails (never a silent pass)."""
        if isinstance(self.estimated_cost, CostFromHistory):
            self._repeat_estimate(context)
        status = event.get("status") if isinstance(event, dict) else None
        if status == "success" and isinstance(event, dict):
            balance, message = event.get("balance"), event.get("message")
            if isinstance(balance, dict) and isinstance(message, str):
                self._complete_forecast(context)
                self.log.info("%s", message)  # the trigger's "Enough LocalLeads credits: ..." line
                return balance
        elif status == "timeout" and isinstance(event, dict):
            raise AirflowSensorTimeout(str(event.get("message") or "Timed out waiting for LocalLeads credits"))
        elif status == "error" and isinstance(event, dict):
            error_cls = getattr(exceptions, str(event.get("error_type")), None)
            if not (isinstance(error_cls, type) and issubclass(error_cls, exceptions.LocalLeadsError)):
                error_cls = exceptions.LocalLeadsError
            raise error_cls(str(event.get("message") or "The LocalLeads credits trigger failed"))
        raise exceptions.LocalLeadsError(
            f"CreditsSensor {self.task_id!r} resumed with an unexpected trigger event {event!r}; failing closed"
        )

    def _repeat_estimate(self, context: Context) -> None:
        """Log the estimate the wait was for from XCom (a deferral keeps XComs on every line; the defer kwargs
        would not do: ``dag.test()`` drops them on resume)."""
        ti = context["ti"]
        estimate = ti.xcom_pull(task_ids=self.task_id, key="estimate", map_indexes=ti.map_index)
        if isinstance(estimate, dict) and "description" in estimate:
            self.log.info("Estimated cost: %s", estimate["description"])
        else:
            self.log.warning("The estimate this sensor waited for is not in XCom 'estimate' any more")

    def _complete_forecast(self, context: Context) -> None:
        days = self._forecast_days()
        if days is None:
            return
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        with LocalLeadsHook(self.localleads_conn_id) as hook:
            forecast = read_forecast(self, hook, context, days)
        if forecast is not None:
            self.log.info("LocalLeads credits forecast: %s", forecast.summary())
