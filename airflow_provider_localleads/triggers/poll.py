"""The balance poll that every LocalLeads trigger shares: one request per connection and interval.

A thousand sensors (and any number of credit watchers) on the same account must not make a thousand
balance requests per interval.

* Airflow 3.3+: ``BaseEventTrigger``'s shared streams. Triggers with the same connection id and poll
  interval return the same ``shared_stream_key``; the triggerer runs ONE ``open_shared_stream`` for the
  group (of the first subscriber's class, with its kwargs: so every class here inherits the same one,
  which reads only the fields of the key) and feeds each trigger's ``filter_shared_stream``.
* Older Airflow (2.11, 3.0-3.2), whose triggerer calls ``run()``: ``run()`` joins a small in-process
  group with the same key (:class:`_PollGroup`). On 3.3+ ``run()`` (used by ``dag.test()``) polls alone.

The key comes from configuration only (``shared_stream_key`` is synchronous and must not look secrets
up): triggers that name the same connection share it, and so the same API key, by construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import weakref
from collections.abc import AsyncIterator, Hashable
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import TriggerEvent

from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditBalance

if TYPE_CHECKING:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

HOOK_MODULE = "airflow_provider_localleads.hooks.localleads"
#: What the first poll of a process imports, loaded in a thread before it (``_load_hook_class``) so the
#: triggerer's event loop never runs an import for us: the hook module (requests, urllib3, ...), the
#: asyncio backend of anyio that httpcore loads at its first asynchronous request, and asgiref.sync,
#: used by the asynchronous connection look-up. None of them at module level: the triggerer imports
#: the trigger modules on its event loop to load the class, and DAG files import them too.
FIRST_POLL_IMPORTS = (HOOK_MODULE, "anyio._backends._asyncio", "asgiref.sync")

#: Whether this Airflow's triggerer shares streams itself (3.3+). If not, ``run()`` shares in-process.
NATIVE_SHARED_STREAMS = importlib.util.find_spec("airflow.triggers.shared_stream") is not None

#: The first element of every LocalLeads balance stream key.
STREAM_NAME = "localleads-credits"


class BalancePollTrigger(BaseEventTrigger):  # type: ignore[misc]
    """Base of every trigger fed by the shared balance poll: the key, the raw stream and ``run()``.

    Subclasses set ``localleads_conn_id`` and ``poll_interval`` (a float, so 300 and 300.0 share) and
    implement ``filter_shared_stream``.
    """

    localleads_conn_id: str
    poll_interval: float
    #: Whether ``run()`` replaces a dead poll (the watchers, which never end) or lets the error out.
    restarts_dead_poll = False

    def shared_stream_key(self) -> Hashable | None:
        """Triggers polling the same connection at the same interval share one poll loop."""
        return (STREAM_NAME, self.localleads_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Poll the balance forever; yield each ``CreditBalance`` or ``LocalLeadsError`` as a raw event.

        Reads only ``localleads_conn_id`` and ``poll_interval`` from ``kwargs`` (the fields of the
        key), whichever trigger class of the group they come from. API errors are yielded, not raised,
        so each trigger turns them into its own event or log line (and transient ones do not end the
        group's poll loop). Anything else (e.g. the connection does not exist) ends the poll; the
        exception then reaches every subscriber.
        """
        poll_interval = float(kwargs.get("poll_interval", 300.0))
        conn_id = kwargs.get("localleads_conn_id", "localleads_default")
        # The first-use costs run in a thread, so they do not stall every other trigger in the loop:
        # the imports of FIRST_POLL_IMPORTS (100-400 ms on a triggerer's first poll), and the first
        # client in the process, which loads the CA bundle (tens of milliseconds of CPU, then shared;
        # see client/tls.py). Through the thread even when all is loaded: a module being imported by
        # another group's thread would otherwise block the loop on its import lock.
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

    def open_stream(self) -> AsyncIterator[Any]:
        """The raw stream for ``run()``: in-process shared on Airflow < 3.3, private on 3.3+ (dag.test)."""
        _, kwargs = self.serialize()
        if NATIVE_SHARED_STREAMS:
            return self.open_shared_stream(kwargs)
        return _PollGroup.subscribe(self.shared_stream_key(), kwargs)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """This trigger's filter over :meth:`open_stream`: the same code as the triggerer's shared path.

        With :attr:`restarts_dead_poll`, a filter that raises (the poll died; the filter has logged and
        waited an interval) runs again over a new poll, keeping the trigger's state.
        """
        while True:
            stream = self.open_stream()
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
    """The hook class, after importing :data:`FIRST_POLL_IMPORTS`; called in a thread, off the loop."""
    for name in FIRST_POLL_IMPORTS[1:]:
        # Another httpx/anyio/Airflow may load other modules: then only the lag comes back, not an error.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    hook_class: type[LocalLeadsHook] = importlib.import_module(HOOK_MODULE).LocalLeadsHook
    return hook_class


#: How many subscribers one turn of the event loop wakes when a poll result is fanned out.
_FAN_OUT_BATCH = 100


class _PollFailed:
    """Delivered to subscribers when the group's poll ends; re-raised in each of them."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _PollGroup:
    """In-process stand-in for Airflow 3.3's ``SharedStreamManager``, for triggerers that call ``run()``.

    One poll task per (event loop, key) fans each raw event out to its subscribers. A subscriber
    keeps only the newest raw event (a balance is a state, not a log: a stale one is worth nothing),
    so a slow subscriber costs one slot, never a growing queue. A subscriber leaves when its
    generator ends or is cancelled (``finally``); the last one to leave cancels the poll. A poll
    that ends (an exception) is delivered to every subscriber and the group is dropped, so the
    next trigger starts a fresh one. No ``await`` between the checks and the changes of the
    registry, so no other coroutine sees it half-updated.
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
        """Hand ``item`` to every subscriber, ``_FAN_OUT_BATCH`` at a time.

        Each put wakes a subscriber; waking 1,000 in one go would run all of them (filter, event,
        log lines) in one turn of the event loop and stall every other trigger of the triggerer
        for that long. Yielding between batches bounds one turn to one batch.
        """
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
