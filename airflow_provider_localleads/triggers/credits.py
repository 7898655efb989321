"""CreditsTrigger: waits in the triggerer until the balance covers a cost (CreditsSensor, deferrable).

Only the connection id and numbers are serialized (stored in the metadata database): never the API key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.planning.check import enough_message, timeout_message, waiting_message
from airflow_provider_localleads.triggers.poll import BalancePollTrigger

__all__ = ["CLASSPATH", "CreditsTrigger"]

CLASSPATH = "airflow_provider_localleads.triggers.credits.CreditsTrigger"


class CreditsTrigger(BalancePollTrigger):
    """Fire when ``available_credits >= estimated_cost``, on an error that waiting cannot fix, or at ``end_at``:

    * ``{"status": "success", "balance": {...}, "estimated_cost": n, "message": "Enough LocalLeads credits: ..."}``
    * ``{"status": "error", "error_type": "LocalLeadsAuthenticationError", "message": "...", ...}``
    * ``{"status": "timeout", "message": "...", "balance": {...} | None, "estimated_cost": n}``

    :param end_at: UNIX time after which the trigger gives up with a ``timeout`` event (None: never).
    """

    def __init__(
        self,
        *,
        estimated_cost: int,
        localleads_conn_id: str = "localleads_default",
        poll_interval: float = 300.0,
        end_at: float | None = None,
    ) -> None:
        super().__init__()
        self.estimated_cost = int(estimated_cost)
        self.localleads_conn_id = localleads_conn_id
        self.poll_interval = float(poll_interval)
        self.end_at = None if end_at is None else float(end_at)
        self._last_logged: tuple[Any, float] = (None, 0.0)  # what was last logged, and when (monotonic)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "estimated_cost": self.estimated_cost,
                "localleads_conn_id": self.localleads_conn_id,
                "poll_interval": self.poll_interval,
                "end_at": self.end_at,
            },
        )

    async def filter_shared_stream(self, stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """This trigger's single event from the group's raw balances/errors.

        A thousand subscribers of one poll wake in the same turn of the event loop: the common case is one
        comparison, and a trigger that logs or fires first sleeps its own short :attr:`spread`, so their
        log lines and events are spread over many turns instead of stalling the loop in one. One deadline
        timer per trigger (not per raw event) enforces ``end_at`` even while the shared stream is quiet.
        """
        if self.end_at is not None and self.end_at <= time.time():
            yield self._timeout_event(None)  # already due: not even one read of the stream
            return
        loop = asyncio.get_running_loop()
        when = None if self.end_at is None else loop.time() + (self.end_at - time.time())
        last: CreditBalance | None = None
        event: TriggerEvent | None = None
        deadline = asyncio.timeout_at(when)
        try:
            async with deadline:
                while event is None:
                    raw = await anext(stream)
                    if isinstance(raw, CreditBalance):
                        last = raw
                    event = await self._on_raw_event(raw)
        except StopAsyncIteration:
            event = self._error_event("LocalLeadsError", "The LocalLeads balance poll ended unexpectedly", True)
        except Exception as err:  # noqa: BLE001 - the group's poll died: every waiter gets an error event
            if isinstance(err, TimeoutError) and deadline.expired():
                event = self._timeout_event(last)
            else:
                error_type = err.error_type if isinstance(err, LocalLeadsError) else type(err).__name__
                event = self._error_event(error_type, f"The LocalLeads balance poll failed: {err}", False)
        yield event

    #: Seconds over which one group's triggers spread their work after a poll. Firing costs ~0.1-0.15 ms of
    #: CPU per trigger: 1,000 spread over 0.1 s bunched the loop's turns up (30-70 ms of lag); over up to
    #: 1 s each turn holds a few triggers' work. A trigger fires at most this much later.
    MAX_SPREAD = 1.0
    #: Seconds before an unchanged "waiting" or "poll failed" line is repeated.
    REPEAT_LOG_AFTER = 3600.0

    @property
    def spread(self) -> float:
        window = min(self.MAX_SPREAD, self.poll_interval / 2)
        return (hash((id(self), self.estimated_cost)) % 1024) / 1024 * window

    async def _on_raw_event(self, raw: Any) -> TriggerEvent | None:
        if isinstance(raw, CreditBalance):
            if raw.can_afford(self.estimated_cost):
                await asyncio.sleep(self.spread)
                message = enough_message(self.estimated_cost, raw)  # the line every other check logs
                self.log.info("%s", message)
                return self._event("success", balance=raw.to_dict(), message=message)
            if self._should_log(("waiting", raw.available_credits, raw.last_reset_at)):
                await asyncio.sleep(self.spread)
                waiting = waiting_message(self.estimated_cost, raw)
                self.log.info("%s; checking every %g s", waiting, self.poll_interval)
            return None
        # The hook's own retry decision: transient means keep waiting. (client.retry came with the hook
        # module, imported off the loop before the first poll, so this import is a dictionary look-up.)
        from airflow_provider_localleads.client.retry import is_transient

        if is_transient(raw):
            if self._should_log(("transient", raw.error_type)):
                await asyncio.sleep(self.spread)
                self.log.warning("LocalLeads balance check failed, will retry in %g s: %s", self.poll_interval, raw)
            return None
        if isinstance(raw, LocalLeadsError):
            return self._error_event(raw.error_type, str(raw), transient=False)
        return self._error_event("LocalLeadsError", f"Unexpected raw event {type(raw).__name__}", False)

    def _should_log(self, what: tuple[Any, ...]) -> bool:
        now = time.monotonic()
        last_what, last_at = self._last_logged
        if what == last_what and now - last_at < self.REPEAT_LOG_AFTER:
            return False
        self._last_logged = (what, now)
        return True

    def _event(self, status: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, **payload, "estimated_cost": self.estimated_cost})

    def _error_event(self, error_type: str, message: str, transient: bool) -> TriggerEvent:
        return self._event("error", error_type=error_type, message=message, transient=transient)

    def _timeout_event(self, last: CreditBalance | None) -> TriggerEvent:
        balance = last.to_dict() if last is not None else None
        return self._event("timeout", message=timeout_message(self.estimated_cost, last), balance=balance)
