"""CreditsSensor: wait until the LocalLeads balance covers a cost (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_localleads.planning.arguments import parse_optional_count

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_localleads.estimates import CostFromHistory
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

DEFAULT_POKE_INTERVAL = 300.0


class CreditsSensor(BaseSensorOperator):
    """Wait until ``available_credits >= estimated_cost``; return the balance dict as XCom.

    Credits change slowly (spending, top-ups, the monthly reset), so the default ``poke_interval``
    is 300 s: polling every few seconds only burns the API's rate limit. Transient API errors
    (rate limits, 5xx, network, after the hook's own retries) are logged and the sensor keeps
    waiting; a wrong API key or an answer we cannot understand fails the task at once. The usual
    sensor arguments apply (``timeout``, ``soft_fail``, ``mode``, ``exponential_backoff``).

    With ``deferrable=True`` (default: ``[operators] default_deferrable``) the balance is checked
    once on the worker, then the wait moves to the triggerer (:class:`CreditsTrigger`), which holds
    no worker slot; the sensor's ``timeout`` still applies. In deferrable mode the trigger polls
    every ``poke_interval`` seconds: ``exponential_backoff`` is not applied there (all triggers on
    one connection and interval share one poll in the triggerer, which needs a fixed interval).

    A :class:`~airflow_provider_localleads.estimates.CostFromHistory` cost is resolved once per run
    of the task on a worker, before the first balance read, logged ("Estimated cost: ...") and pushed as XCom
    ``estimate``, as the operator does: in poke mode once per try; in deferrable mode before deferring
    (the trigger waits for that number; ``execute_complete`` logs the estimate again with the result,
    from the XCom, which a deferral keeps); in reschedule mode every poke is
    a new run of the task, so each one resolves it again (one more history read per poke; the
    estimate follows the history while waiting). A transient error while resolving it keeps a poke
    or reschedule sensor waiting; in deferrable mode it fails the try (retries apply), since there is
    no number to defer with.

    ``forecast_days`` (off by default) reads the usage once, when the credits are there (the final
    result), never while waiting, so polling costs no extra requests: the success line gets the rate
    and the run-out date, and XCom ``forecast`` holds ``CreditUsage.to_dict()``. After a deferred wait
    it is read on the worker in ``execute_complete`` (one more balance read with the history). If the
    forecast cannot be read, a warning says so and the sensor still succeeds.

    :param estimated_cost: credits needed (templated; must render to a whole number >= 0), or a
        ``CostFromHistory``.
    :param localleads_conn_id: Airflow connection of type ``localleads`` (templated).
    :param deferrable: wait in the triggerer instead of on a worker.
    :param forecast_days: None (off) or the forecast's window in days, >= 1 (templated).
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
        parse_optional_count(forecast_days, field="forecast_days", minimum=1, task_id=self.task_id, at_parse=True)
        self.estimated_cost = estimated_cost
        self.localleads_conn_id = localleads_conn_id
        self.deferrable = deferrable
        self.forecast_days = forecast_days
        #: The cost this run of the task resolved (estimate dict or None), reset by every execute().
        self._resolved: tuple[int, dict[str, Any] | None] | None = None

    def _poke_interval_seconds(self) -> float:
        interval = self.poke_interval
        return interval.total_seconds() if isinstance(interval, timedelta) else float(interval)

    def _timeout_seconds(self) -> float:
        timeout = self.timeout
        return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)

    def _forecast_days(self) -> int | None:
        return parse_optional_count(self.forecast_days, field="forecast_days", minimum=1, task_id=self.task_id)

    def _cost(self, hook: LocalLeadsHook, context: Context) -> int:
        """This run's cost, resolved (and a CostFromHistory estimate logged and pushed) at its first poke."""
        if self._resolved is None:
            from airflow_provider_localleads.estimates import resolve_cost
            from airflow_provider_localleads.planning.tasks import report_estimate

            cost, estimate = resolve_cost(self.estimated_cost, hook, self.task_id)  # a bad number: no request
            self._resolved = cost, None if estimate is None else estimate.to_dict()
            if self._resolved[1] is not None:
                report_estimate(self, context, self._resolved[1])
        return self._resolved[0]

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_localleads.client.retry import is_transient
        from airflow_provider_localleads.exceptions import LocalLeadsError
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
        from airflow_provider_localleads.planning.check import enough_message, waiting_message
        from airflow_provider_localleads.planning.metrics import emit_credit_gauges
        from airflow_provider_localleads.planning.tasks import read_forecast

        days = self._forecast_days()
        try:
            with LocalLeadsHook(self.localleads_conn_id) as hook:
                cost = self._cost(hook, context)
                balance = hook.get_balance()
                done = balance.can_afford(cost)
                forecast = read_forecast(self, hook, context, days, balance) if done else None
        except LocalLeadsError as err:
            if not is_transient(err):  # the hook's own retry decision: transient means keep waiting
                raise
            self.log.warning("LocalLeads balance check failed (will check again): %s", err)
            return PokeReturnValue(is_done=False)
        emit_credit_gauges(self.localleads_conn_id, balance.available_credits, cost)
        self.log.info("%s", enough_message(cost, balance, forecast) if done else waiting_message(cost, balance))
        return PokeReturnValue(is_done=done, xcom_value=balance.to_dict() if done else None)

    def execute(self, context: Context) -> Any:
        self._resolved = None  # resolved afresh by every run of the task (each try; each reschedule)
        if not self.deferrable:
            return super().execute(context)
        # Check once here: if the credits are already there, no trip through the triggerer.
        cost, first = self._first_check(context)
        if first.is_done:
            return first.xcom_value
        from airflow_provider_localleads.triggers.credits import CreditsTrigger

        timeout = self._timeout_seconds()
        self.defer(
            trigger=CreditsTrigger(
                estimated_cost=cost,
                # Already rendered (templates are rendered before execute): the trigger is stored
                # with the connection id this run uses, never with the template.
                localleads_conn_id=self.localleads_conn_id,
                poll_interval=self._poke_interval_seconds(),
                end_at=time.time() + timeout,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout),
        )
        return None  # unreachable: defer() raises

    def _first_check(self, context: Context) -> tuple[int, PokeReturnValue]:
        """The deferrable path's cost and first poke, with soft_fail/never_fail applied as in poke mode.

        The cost is resolved before the poke, outside its keep-waiting rule: the trigger needs a
        number, so a transient error while estimating it fails this try.

        ``BaseSensorOperator.execute`` maps errors to skips for soft_fail/never_fail; this check runs
        outside it, so it applies the same rules itself (a wrong key with soft_fail=True skips in
        every mode, not only in poke and reschedule mode).
        """
        from airflow.providers.common.compat.sdk import (
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )

        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        never_fail = getattr(self, "never_fail", False)
        try:
            self._forecast_days()
            with LocalLeadsHook(self.localleads_conn_id) as hook:
                cost = self._cost(hook, context)
            return cost, self.poke(context)
        except AirflowSkipException:
            raise
        except (AirflowSensorTimeout, AirflowFailException) as err:
            if self.soft_fail:
                raise AirflowSkipException("Skipping due to soft_fail is set to True.") from err
            if never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
            raise
        except Exception as err:
            if never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
            raise

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired. Anything but a well-formed success fails (never a silent pass)."""
        from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException

        from airflow_provider_localleads import exceptions
        from airflow_provider_localleads.estimates import CostFromHistory

        status = event.get("status") if isinstance(event, dict) else None
        if isinstance(self.estimated_cost, CostFromHistory):
            self._repeat_estimate(context)
        if status == "success" and isinstance(event, dict) and isinstance(event.get("balance"), dict):
            self._complete_forecast(context)
            self.log.info(
                "Enough LocalLeads credits: needs %s, balance %s", event.get("estimated_cost"), event["balance"]
            )
            return event["balance"]  # type: ignore[no-any-return]
        if status == "timeout" and isinstance(event, dict):
            message = str(event.get("message") or "Timed out waiting for LocalLeads credits")
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        if status == "error" and isinstance(event, dict):
            error_cls = getattr(exceptions, str(event.get("error_type")), None)
            if not (isinstance(error_cls, type) and issubclass(error_cls, exceptions.LocalLeadsError)):
                error_cls = exceptions.LocalLeadsError
            raise error_cls(str(event.get("message") or "The LocalLeads credits trigger failed"))
        raise exceptions.LocalLeadsError(
            f"CreditsSensor {self.task_id!r} resumed with an unexpected trigger event {event!r}; failing closed"
        )

    def _repeat_estimate(self, context: Context) -> None:
        """Log the estimate the wait was for, as pushed before deferring (a deferral keeps the task's
        XComs on every line; the defer kwargs would not do: ``dag.test()`` drops them on resume)."""
        ti = context["ti"]
        estimate = ti.xcom_pull(task_ids=self.task_id, key="estimate", map_indexes=ti.map_index)
        if isinstance(estimate, dict) and "description" in estimate:
            self.log.info("Estimated cost: %s", estimate["description"])
        else:
            self.log.warning("The estimate this sensor waited for is not in XCom 'estimate' any more")

    def _complete_forecast(self, context: Context) -> None:
        """After a deferred wait: the forecast, read on the worker (``get_usage``), logged on its own line."""
        days = self._forecast_days()
        if days is None:
            return
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
        from airflow_provider_localleads.planning.tasks import read_forecast

        with LocalLeadsHook(self.localleads_conn_id) as hook:
            forecast = read_forecast(self, hook, context, days)
        if forecast is not None:
            self.log.info("LocalLeads credits forecast: %s", forecast.summary())
