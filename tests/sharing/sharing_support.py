"""Helpers for the shared-polling tests: drive triggers the way the triggerer does, and wait for things."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_localleads.sandbox import SandboxServer
from airflow_provider_localleads.triggers.credits import CreditsTrigger

CONN_ID = "ll_shared"
BALANCE_PATH = "/api/v1/credits/balance"


def make_trigger(
    conn_id: str, cost: int, *, poll_interval: float = 0.05, end_at: float | None = None
) -> CreditsTrigger:
    return CreditsTrigger(estimated_cost=cost, localleads_conn_id=conn_id, poll_interval=poll_interval, end_at=end_at)


async def run_shared(manager: Any, trigger_id: int, trigger: CreditsTrigger) -> list[dict[str, Any]]:
    """Run one trigger exactly as ``TriggerRunner.run_trigger`` does on Airflow 3.3 (shared path)."""
    key = trigger.shared_stream_key()
    assert key is not None
    events: list[dict[str, Any]] = []
    try:
        stream = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)
        async for event in trigger.filter_shared_stream(stream):
            events.append(event.payload)
    finally:
        await manager.unsubscribe(trigger_id, key)
    return events


async def run_alone(trigger: CreditsTrigger) -> list[dict[str, Any]]:
    """Run one trigger through ``run()``, as ``dag.test()`` and the triggerer of Airflow < 3.3 do."""
    return [event.payload async for event in trigger.run()]


async def until(condition: Callable[[], bool], *, within: float = 10.0, what: str = "condition") -> None:
    """Wait (cooperatively) until ``condition()`` holds; fail the test after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def settle(poll_interval: float, polls: int = 4) -> None:
    """Let a few poll intervals pass (to show that something does NOT happen)."""
    await asyncio.sleep(poll_interval * polls)


def balance_requests(sandbox: SandboxServer) -> int:
    return sandbox.request_count(BALANCE_PATH)


class Triggerer:
    """Runs triggers the way a triggerer does.

    ``native``: Airflow 3.3's ``SharedStreamManager``, driven as ``TriggerRunner.run_trigger`` drives it
    (subscribe -> ``filter_shared_stream`` -> unsubscribe in ``finally``). Otherwise ``run()``, as the
    triggerer of Airflow < 3.3 calls it (in-process sharing; the test enables it on 3.3 too).
    """

    def __init__(self, native: bool) -> None:
        self.native = native
        self.manager: Any = None
        self._next_id = 0

    def start(self, trigger: CreditsTrigger) -> asyncio.Task[list[dict[str, Any]]]:
        self._next_id += 1
        if self.native:
            if self.manager is None:
                from airflow.triggers.shared_stream import SharedStreamManager

                self.manager = SharedStreamManager()
            return asyncio.create_task(run_shared(self.manager, self._next_id, trigger))
        return asyncio.create_task(run_alone(trigger))

    async def stop(self, tasks: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.manager is not None:
            await self.manager.stop_all()
