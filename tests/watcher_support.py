"""Running credit watchers as a triggerer does, for the watcher tests (tests/triggers, tests/dagrun)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer
from airflow_provider_localleads.triggers import events

#: Seconds between polls: short so the tests are quick; nothing is timed against it.
INTERVAL = 0.03


class RecordingLog:
    """Stands in for the watchers' logger: (level, formatted line), independent of log capture."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(msg: str, *args: object, **kwargs: object) -> None:
            self.records.append((level.upper(), msg % args if args else msg))

        return record

    def having(self, text: str) -> list[tuple[str, str]]:
        return [(level, line) for level, line in self.records if text in line]


class Watching:
    """Runs triggers as a triggerer does and records every event of each; waits by counting polls."""

    def __init__(self, sandbox: SandboxServer, mode: str) -> None:
        self.sandbox = sandbox
        self.native = mode == "native"
        self.manager: Any = None
        self.tasks: list[asyncio.Task[None]] = []
        self.triggers: list[Any] = []
        self.events: dict[int, list[dict[str, Any]]] = {}

    def start(self, trigger: Any) -> list[dict[str, Any]]:
        trigger_id = len(self.tasks) + 1
        seen = self.events[trigger_id] = []
        self.triggers.append(trigger)
        self.tasks.append(asyncio.create_task(self._run(trigger_id, trigger, seen)))
        return seen

    async def _run(self, trigger_id: int, trigger: Any, seen: list[dict[str, Any]]) -> None:
        if not self.native:
            async for event in trigger.run():
                seen.append(event.payload)
            return
        if self.manager is None:
            from airflow.triggers.shared_stream import SharedStreamManager

            self.manager = SharedStreamManager()
        key = trigger.shared_stream_key()
        try:
            stream = self.manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)
            async for event in trigger.filter_shared_stream(stream):
                seen.append(event.payload)
        finally:
            await self.manager.unsubscribe(trigger_id, key)

    async def polls(self, count: int = 2) -> None:
        """Wait until ``count`` more balance requests were answered (and handed to the triggers)."""
        target = self.sandbox.request_count(BALANCE_PATH) + count
        async with asyncio.timeout(20):
            while self.sandbox.request_count(BALANCE_PATH) < target:
                await asyncio.sleep(0.005)
        await asyncio.sleep(INTERVAL / 3)  # the last answer reaches the filters

    async def baselines(self) -> None:
        """Wait until every watcher has taken (or loaded) its baseline."""
        watchers = [t for t in self.triggers if isinstance(t, events._CreditsWatcher)]
        async with asyncio.timeout(30):
            while not all(w._state is not None and w._state.value is not None for w in watchers):
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for trigger, result in zip(self.triggers, results, strict=True):
            if isinstance(trigger, events._CreditsWatcher) and not isinstance(result, asyncio.CancelledError):
                raise AssertionError(f"a watcher ended on its own: {result!r}")  # it must run forever
        self.tasks.clear()
        self.triggers.clear()


def scenario(sandbox: SandboxServer, mode: str, body: Callable[[Watching], Awaitable[None]]) -> Watching:
    watching = Watching(sandbox, mode)

    async def main() -> None:
        try:
            await body(watching)
        finally:
            await watching.stop()

    asyncio.run(main())
    return watching
