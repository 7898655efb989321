"""CreditsTrigger: waits in the triggerer until the balance covers a cost (CreditsSensor, deferrable).

Fully asynchronous: the connection is looked up with ``aget_connection``, HTTP goes through httpx,
and every wait is an ``asyncio.sleep``, so one triggerer can hold thousands of these.

**One poll per connection, not one per trigger.** A thousand sensors waiting on the same account
must not make a thousand balance requests per interval.

* Airflow 3.3+: built on ``BaseEventTrigger``'s shared streams. Every trigger for the same connection
  id and poll interval returns the same ``shared_stream_key``; the triggerer's ``SharedStreamManager``
  runs ONE ``open_shared_stream`` poll loop for the group and feeds each trigger's
  ``filter_shared_stream``, which decides on that trigger's own threshold. When the last trigger of a
  group leaves (fired, timed out, cancelled), the manager stops the poll.
* Older Airflow (2.11, 3.0-3.2), whose triggerer calls ``run()``: ``run()`` joins a small in-process
  group with the same key (:class:`_PollGroup`), so the triggerer still makes one request per interval
  per group. On 3.3+ ``run()`` (used by ``dag.test()``) polls on its own.

The key comes from configuration only (``shared_stream_key`` is synchronous and must not look secrets
up): triggers that name the same connection share it, and so the same API key, by construction.
Two connection ids that hold the same key poll separately.

Only the connection id and numbers are serialized (they are stored in the metadata database);
the API key is read from the connection by the triggerer when it polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import time
import weakref
from collections.abc import AsyncIterator, Hashable
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import TriggerEvent

from airflow_provider_localleads.exceptions import LocalLeadsError
from airflow_provider_localleads.models import CreditBalance

if TYPE_CHECKING:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

CLASSPATH = "airflow_provider_localleads.triggers.credits.CreditsTrigger"
HOOK_MODULE = "airflow_provider_localleads.hooks.localleads"
#: What the first poll of a process imports, loaded in a thread before it (``_load_hook_class``) so the
#: triggerer's event loop never runs an import for us: the hook module (requests, urllib3, ...), the
#: asyncio backend of anyio that httpcore loads at its first asynchronous request, and asgiref.sync,
#: used by the asynchronous connection look-up. None of them at module level: the triggerer imports
#: this module on its event loop to load the class, and DAG files import it through the sensor.
FIRST_POLL_IMPORTS = (HOOK_MODULE, "anyio._backends._asyncio", "asgiref.sync")

#: Whether this Airflow's triggerer shares streams itself (3.3+). If not, ``run()`` shares in-process.
NATIVE_SHARED_STREAMS = importlib.util.find_spec("airflow.triggers.shared_stream") is not None


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

    # ------------------------------------------------------------------ shared polling

    def shared_stream_key(self) -> Hashable | None:
        """Triggers polling the same connection at the same interval share one poll loop."""
        return ("localleads-credits", self.localleads_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Poll the balance forever; yield each ``CreditBalance`` or ``LocalLeadsError`` as a raw event.

        API errors are yielded, not raised, so each waiting trigger turns them into its own
        structured event (and transient ones do not end the group's poll loop). Anything else
        (e.g. the connection does not exist) ends the poll; the exception then reaches every
        subscriber, whose filter reports it as an ``error`` event.
        """
        poll_interval = float(kwargs.get("poll_interval", 300.0))
        conn_id = kwargs.get("localleads_conn_id", "localleads_default")
        # The first-use costs run in a thread, so they do not stall every other trigger in the loop:
        # the imports of FIRST_POLL_IMPORTS (100-400 ms on a triggerer's first poll), and the first
        # client in the process, which loads the CA bundle (tens of milliseconds of CPU, then shared;
        # see _tls.py). Through the thread even when all is loaded: a module being imported by another
        # group's thread would otherwise block the loop on its import lock.
        hook_class = await asyncio.to_thread(_load_hook_class)
        client = await asyncio.to_thread(hook_class.async_client)
        async with client:
            while True:
                # A fresh hook per poll re-reads the connection, so a rotated key is picked up
                # without restarting the triggerer.
                hook = hook_class(conn_id)
                raw: CreditBalance | LocalLeadsError
                try:
                    raw = await hook.aget_balance(client=client)
                except LocalLeadsError as err:
                    raw = err
                yield raw
                await asyncio.sleep(poll_interval)

    async def filter_shared_stream(self, stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Turn the group's raw balances/errors into this trigger's single event.

        Built for a thousand subscribers of one poll, all woken in the same turn of the triggerer's
        event loop: the common case (still not enough, nothing new to say) is one comparison; a
        trigger that has something to log or fires first sleeps a short, trigger-specific moment
        (:attr:`spread`) so those thousand log lines and events are spread over many turns
        instead of stalling the loop in one. One deadline timer per trigger (not per raw event)
        enforces ``end_at`` even while the shared stream is quiet.
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
        except TimeoutError as err:
            if deadline.expired():
                event = self._timeout_event(last)
            else:
                event = self._error_event(type(err).__name__, f"The LocalLeads balance poll failed: {err}", False)
        except StopAsyncIteration:
            event = self._error_event("LocalLeadsError", "The LocalLeads balance poll ended unexpectedly", True)
        except Exception as err:  # noqa: BLE001 - the group's poll died: every waiter gets an error event
            error_type = err.error_type if isinstance(err, LocalLeadsError) else type(err).__name__
            event = self._error_event(error_type, f"The LocalLeads balance poll failed: {err}", False)
        yield event

    #: Seconds over which the triggers of one group spread their work after a poll (see ``spread``).
    #: Firing costs ~0.1-0.15 ms of CPU per trigger (an event and a log line): 1,000 triggers spread
    #: over 0.1 s were more work than time, so turns of the loop bunched up (30-70 ms of lag); over
    #: up to 1 s, each turn holds a few triggers' work. A trigger fires at most this much later.
    MAX_SPREAD = 1.0
    #: A trigger repeats an unchanged "waiting" or "poll failed" line at most this often (seconds).
    REPEAT_LOG_AFTER = 3600.0

    @property
    def spread(self) -> float:
        """This trigger's delay before logging or firing: a fixed fraction of the spread window."""
        window = min(self.MAX_SPREAD, self.poll_interval / 2)
        return (hash((id(self), self.estimated_cost)) % 1024) / 1024 * window

    async def _on_raw_event(self, raw: Any) -> TriggerEvent | None:
        """This trigger's event for one raw event of the poll, or None to keep waiting."""
        if isinstance(raw, CreditBalance):
            if raw.can_afford(self.estimated_cost):
                await asyncio.sleep(self.spread)
                self.log.info("Enough LocalLeads credits: needs %d, %s", self.estimated_cost, raw.summary())
                payload = {"status": "success", "balance": raw.to_dict(), "estimated_cost": self.estimated_cost}
                return TriggerEvent(payload)
            if self._should_log(("waiting", raw.available_credits, raw.last_reset_at)):
                await asyncio.sleep(self.spread)
                self.log.info(
                    "Waiting for LocalLeads credits: needs %d, %s; checking every %g s",
                    self.estimated_cost,
                    raw.summary(),
                    self.poll_interval,
                )
            return None
        # The hook's own retry decision: transient means keep waiting. (_retry came with the hook
        # module, imported off the loop before the first poll, so this import is a dictionary look-up.)
        from airflow_provider_localleads._retry import is_transient

        if is_transient(raw):
            if self._should_log(("transient", raw.error_type)):
                await asyncio.sleep(self.spread)
                self.log.warning("LocalLeads balance check failed, will retry in %g s: %s", self.poll_interval, raw)
            return None
        if isinstance(raw, LocalLeadsError):
            return self._error_event(raw.error_type, str(raw), transient=False)
        return self._error_event("LocalLeadsError", f"Unexpected raw event {type(raw).__name__}", False)

    def _should_log(self, what: tuple[Any, ...]) -> bool:
        """Log a state the first time, when it changes, and again after REPEAT_LOG_AFTER."""
        now = time.monotonic()
        last_what, last_at = self._last_logged
        if what == last_what and now - last_at < self.REPEAT_LOG_AFTER:
            return False
        self._last_logged = (what, now)
        return True

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """The same filter over a stream: in-process shared on Airflow < 3.3, private on 3.3+ (dag.test)."""
        _, kwargs = self.serialize()
        key = self.shared_stream_key()
        stream = self.open_shared_stream(kwargs) if NATIVE_SHARED_STREAMS else _PollGroup.subscribe(key, kwargs)
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
            async for raw in CreditsTrigger.open_shared_stream(kwargs):
                await self._offer(raw)
            error = RuntimeError("The LocalLeads balance poll ended unexpectedly")
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - handed to every subscriber
            error = err
        self._evict()
        await self._offer(_PollFailed(error))
