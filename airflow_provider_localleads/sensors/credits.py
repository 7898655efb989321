"""CreditsSensor: wait until the LocalLeads balance covers a cost (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_localleads._arguments import parse_estimated_cost

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

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

    :param estimated_cost: credits needed (templated; must render to a whole number >= 0).
    :param localleads_conn_id: Airflow connection of type ``localleads`` (templated).
    :param deferrable: wait in the triggerer instead of on a worker.
    """

    template_fields: Sequence[str] = ("estimated_cost", "localleads_conn_id")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        estimated_cost: int | str,
        localleads_conn_id: str = "localleads_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float | timedelta = DEFAULT_POKE_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.estimated_cost = estimated_cost
        self.localleads_conn_id = localleads_conn_id
        self.deferrable = deferrable

    def _poke_interval_seconds(self) -> float:
        interval = self.poke_interval
        return interval.total_seconds() if isinstance(interval, timedelta) else float(interval)

    def _timeout_seconds(self) -> float:
        timeout = self.timeout
        return timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_localleads._metrics import emit_credit_gauges
        from airflow_provider_localleads._retry import is_transient
        from airflow_provider_localleads.exceptions import LocalLeadsError
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        cost = parse_estimated_cost(self.estimated_cost, task_id=self.task_id)
        try:
            with LocalLeadsHook(self.localleads_conn_id) as hook:
                balance = hook.get_balance()
        except LocalLeadsError as err:
            if not is_transient(err):  # the hook's own retry decision: transient means keep waiting
                raise
            self.log.warning("LocalLeads balance check failed (will check again): %s", err)
            return PokeReturnValue(is_done=False)
        emit_credit_gauges(self.localleads_conn_id, balance.available_credits, cost)
        done = balance.can_afford(cost)
        self.log.info(
            "%s LocalLeads credits: needs %d, %s",
            "Enough" if done else "Waiting for",
            cost,
            balance.summary(),
        )
        return PokeReturnValue(is_done=done, xcom_value=balance.to_dict() if done else None)

    def execute(self, context: Context) -> Any:
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
        """The deferrable path's first poke, with soft_fail/never_fail applied as in poke mode.

        ``BaseSensorOperator.execute`` maps errors to skips for soft_fail/never_fail; this check runs
        outside it, so it applies the same rules itself (a wrong key with soft_fail=True skips in
        every mode, not only in poke and reschedule mode).
        """
        from airflow.providers.common.compat.sdk import (
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
        )

        never_fail = getattr(self, "never_fail", False)
        try:
            return parse_estimated_cost(self.estimated_cost, task_id=self.task_id), self.poke(context)
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

        status = event.get("status") if isinstance(event, dict) else None
        if status == "success" and isinstance(event, dict) and isinstance(event.get("balance"), dict):
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
