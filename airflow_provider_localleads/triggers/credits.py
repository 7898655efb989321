"""CreditsTrigger: waits in the triggerer until the balance covers a cost (CreditsSensor, deferrable).

Fully asynchronous: the connection is looked up with ``aget_connection``, HTTP goes through httpx,
and every wait is an ``asyncio.sleep``, so one triggerer can hold thousands of these.

Built on ``BaseEventTrigger``'s shared streams (Airflow 3.3+): every trigger for the same
connection and poll interval declares the same ``shared_stream_key``, the triggerer runs ONE
``open_shared_stream`` poll loop for the whole group, and each trigger's
``filter_shared_stream`` decides on its own threshold. ``run()`` (used by Airflow 2.11, by
``dag.test()`` and when sharing is off) is the same filter over a private stream.

Only the connection id and numbers are serialized (they are stored in the metadata database);
the API key is read from the connection by the triggerer when it polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Hashable
from typing import Any

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import TriggerEvent

from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditBalance

CLASSPATH = "airflow_provider_localleads.triggers.credits.CreditsTrigger"


class CreditsTrigger(BaseEventTrigger):  # type: ignore[misc]
    """Fire when ``available_credits >= estimated_cost``, on an error that waiting cannot fix, or at ``end_at``.

    Events (``TriggerEvent.payload``):

    * ``{"status": "success", "balance": {...}, "estimated_cost": n}``
    * ``{"status": "error", "error_type": "LocalLeadsAuthenticationError", "message": "...", ...}``
    * ``{"status": "timeout", "message": "...", "balance": {...} | None, "estimated_cost": n}``

    Transient API errors (rate limits, 5xx, network) are logged and polling goes on.

    :param estimated_cost: credits needed (a whole number >= 0).
    :param localleads_conn_id: Airflow connection of type ``localleads``.
    :param poll_interval: seconds between balance reads.
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

    # ------------------------------------------------------------------ shared polling

    def shared_stream_key(self) -> Hashable | None:
        """Triggers polling the same connection at the same interval share one poll loop."""
        return ("localleads-credits", self.localleads_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Poll the balance forever; yield each ``CreditBalance`` or ``LocalLeadsError`` as a raw event.

        Errors are yielded, not raised, so each waiting trigger turns them into its own
        structured event (and transient ones do not end the group's poll loop).
        """
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        poll_interval = float(kwargs.get("poll_interval", 300.0))
        conn_id = kwargs.get("localleads_conn_id", "localleads_default")
        async with LocalLeadsHook.async_client() as client:
            while True:
                # A fresh hook per poll re-reads the connection, so a rotated key is picked up
                # without restarting the triggerer.
                hook = LocalLeadsHook(conn_id)
                raw: CreditBalance | LocalLeadsError
                try:
                    raw = await hook.aget_balance(client=client)
                except LocalLeadsError as err:
                    raw = err
                yield raw
                await asyncio.sleep(poll_interval)

    async def filter_shared_stream(self, stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Turn the group's raw balances/errors into this trigger's single event."""
        last: CreditBalance | None = None
        while True:
            remaining = None if self.end_at is None else self.end_at - time.time()
            if remaining is not None and remaining <= 0:
                yield self._timeout_event(last)
                return
            try:
                raw = await asyncio.wait_for(anext(stream), timeout=remaining)
            except TimeoutError:
                yield self._timeout_event(last)
                return
            except StopAsyncIteration:
                yield self._error_event("LocalLeadsError", "The balance poll ended unexpectedly", transient=True)
                return
            if isinstance(raw, CreditBalance):
                last = raw
                if raw.can_afford(self.estimated_cost):
                    self.log.info("Enough LocalLeads credits: needs %d, %s", self.estimated_cost, raw.summary())
                    yield TriggerEvent(
                        {"status": "success", "balance": raw.to_dict(), "estimated_cost": self.estimated_cost}
                    )
                    return
                self.log.info(
                    "Waiting for LocalLeads credits: needs %d, %s; next check in %.0f s",
                    self.estimated_cost,
                    raw.summary(),
                    self.poll_interval,
                )
            elif isinstance(raw, LocalLeadsError) and raw.transient:
                self.log.warning("LocalLeads balance check failed, will retry in %.0f s: %s", self.poll_interval, raw)
            elif isinstance(raw, LocalLeadsError):
                yield self._error_event(raw.error_type, str(raw), transient=False)
                return
            else:
                yield self._error_event("LocalLeadsError", f"Unexpected raw event {type(raw).__name__}", False)
                return

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Standalone polling (Airflow 2.11, dag.test, no sharing): the same filter over a private stream."""
        stream = self.open_shared_stream(self.serialize()[1])
        try:
            async for event in self.filter_shared_stream(stream):
                yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ events

    def _error_event(self, error_type: str, message: str, transient: bool) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "error",
                "error_type": error_type,
                "message": message,
                "transient": transient,
                "estimated_cost": self.estimated_cost,
            }
        )

    def _timeout_event(self, last: CreditBalance | None) -> TriggerEvent:
        seen = f"last seen: {last.summary()}" if last is not None else "no balance could be read"
        return TriggerEvent(
            {
                "status": "timeout",
                "message": f"Timed out waiting for {self.estimated_cost} LocalLeads credits ({seen})",
                "balance": last.to_dict() if last is not None else None,
                "estimated_cost": self.estimated_cost,
            }
        )
