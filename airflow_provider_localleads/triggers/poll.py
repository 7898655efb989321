"""The balance poll that every LocalLeads trigger shares: one request per connection and interval, so a
thousand sensors on one account do not make a thousand requests per interval.

Airflow 3.3+ shares it through ``BaseEventTrigger``'s shared streams; on older lines, whose triggerer
calls ``run()``, ``run()`` joins an in-process group with the same key (:class:`_PollGroup`). The key comes
from configuration only (``shared_stream_key`` is synchronous and must not look secrets up): triggers
that name the same connection share it, and so the same API key, by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import weakref
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import TriggerEvent

from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditBalance

if TYPE_CHECKING:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

HOOK_MODULE = "airflow_provider_localleads.hooks.localleads"
#: Imported in a thread before the first poll, so the triggerer's event loop never runs an import for us
#: (the hook's HTTP stack, anyio's backend httpcore loads at its first request, asgiref.sync for the async
#: connection look-up). None at module level: the triggerer imports this module on its loop, DAG files too.
FIRST_POLL_IMPORTS = (HOOK_MODULE, "anyio._backends._asyncio", "asgiref.sync")

NATIVE_SHARED_STREAMS = importlib.util.find_spec("airflow.triggers.shared_stream") is not None

STREAM_NAME = "localleads-credits"


class BalancePollTrigger(BaseEventTrigger):  # type: ignore[misc]
    """Base of every trigger fed by the shared balance poll. Subclasses set ``localleads_conn_id`` and
    ``poll_interval`` (a float, so 300 and 300.0 share) and implement ``filter_shared_stream``."""

    localleads_conn_id: str
    poll_interval: float
    #: Whether ``run()`` replaces a dead poll (the watchers, which never end) or lets the error out.
    restarts_dead_poll = False

    def shared_stream_key(self) -> Hashable | None:
        return (STREAM_NAME, self.localleads_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Poll the balance forever, yielding each ``CreditBalance`` or ``LocalLeadsError``.

        The triggerer runs the first subscriber's class with its kwargs, so this reads only the fields of
        the key. API errors are yielded, not raised, so each trigger makes its own event or log line of
        them; anything else (e.g. no such connection) ends the poll for every subscriber.
        """
        poll_interval = float(kwargs.get("poll_interval", 300.0))
        conn_id = kwargs.get("localleads_conn_id", "localleads_default")
        # First-use costs run in a thread, so they do not stall every other trigger: the imports (100-400 ms)
        # and the first client, which loads the CA bundle (client/tls.py). Even when all is loaded: a module
        # being imported by another group's thread would otherwise block the loop on its import lock.
        hook_class = await asyncio.to_thread(_load_hook_class)
        client = await asyncio.to_thread(hook_class.async_client)
        async with client:
            while True:
                # A fresh hook per poll re-reads the connection: a rotated key is picked up without
                # restarting the triggerer.
                raw: CreditBalance | LocalLeadsError
                try:
                    raw = await hook_class(conn_id).aget_balance(client=client)
                except LocalLeadsError as err:
                    raw = err
                yield raw
                await asyncio.sleep(poll_interval)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The same filter as the triggerer's shared path, over a poll shared in-process on Airflow < 3.3 and
        a private one on 3.3+ (dag.test). With :attr:`restarts_dead_poll`, a filter that raises (it has
        logged and waited an interval) runs again over a new poll, keeping the trigger's state."""
        _, kwargs = self.serialize()
        while True:
            if NATIVE_SHARED_STREAMS:
                stream = self.open_shared_stream(kwargs)
            else:
                stream = _PollGroup.subscribe(self.shared_stream_key(), kwargs)
            try:
                async for event in self.filter_shared_stream(stream):
                    yield event
                return
            except Exception:
                if not self.restarts_dead_poll:
                    raise
            finally:
                await stream.aclose()  # type: ignore[attr-defined]


def _load_hook_class() -> type[LocalLeadsHook]:
    for name in FIRST_POLL_IMPORTS[1:]:
        # Another httpx/anyio/Airflow may load other modules: then only the lag comes back, not an error.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    hook_class: type[LocalLeadsHook] = importlib.import_module(HOOK_MODULE).LocalLeadsHook
    return hook_class


_FAN_OUT_BATCH = 100


@dataclass(frozen=True, slots=True)
class _PollFailed:
    """The group's poll ended: re-raised in each subscriber."""

    error: BaseException


class _PollGroup:
    """In-process stand-in for Airflow 3.3's ``SharedStreamManager``: one poll task per (event loop, key).

    A subscriber keeps only the newest raw event (a balance is a state, not a log), so a slow one costs
    one slot, never a growing queue; the last to leave cancels the poll. No ``await`` between the checks
    and the changes of the registry, so no other coroutine sees it half-updated.
    """

    _registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _PollGroup]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, key: Hashable, kwargs: dict[str, Any], groups: dict[Hashable, _PollGroup]) -> None:
        self.key = key
        self.queues: set[asyncio.Queue[Any]] = set()
        self._groups = groups
        self.task = asyncio.create_task(self._poll(kwargs), name=f"localleads-credits-poll[{key!r}]")

    @classmethod
    async def subscribe(cls, key: Hashable, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        groups = cls._registry.setdefault(asyncio.get_running_loop(), {})
        group = groups.get(key)
        if group is None:
            group = groups[key] = cls(key, kwargs, groups)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        group.queues.add(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _PollFailed):
                    raise item.error
                yield item
        finally:
            group.queues.discard(queue)
            if not group.queues:
                group._evict()
                group.task.cancel()

    def _evict(self) -> None:
        if self._groups.get(self.key) is self:
            del self._groups[self.key]

    async def _offer(self, item: Any) -> None:
        """Hand ``item`` to every subscriber, ``_FAN_OUT_BATCH`` at a time: waking 1,000 in one turn of the
        event loop would stall every other trigger of the triggerer for that long."""
        for index, queue in enumerate(list(self.queues)):
            if index and index % _FAN_OUT_BATCH == 0:
                await asyncio.sleep(0)
            if queue not in self.queues:
                continue  # left while we yielded
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(item)

    async def _poll(self, kwargs: dict[str, Any]) -> None:
        error: BaseException
        try:
            async for raw in BalancePollTrigger.open_shared_stream(kwargs):
                await self._offer(raw)
            error = RuntimeError("The LocalLeads balance poll ended unexpectedly")
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - handed to every subscriber
            error = err
        self._evict()
        await self._offer(_PollFailed(error))
