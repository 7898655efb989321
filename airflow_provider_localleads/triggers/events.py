"""Credit watchers for event-driven scheduling (Airflow 3): ``AssetWatcher(name=..., trigger=...)``.

Edge, never level: a REST balance cannot be consumed like a queue message, and Airflow re-creates a
watcher trigger that returns (a level condition would fire over and over). So these watchers never
return, and fire only on a change from what they last saw (:mod:`.watch_state`). Errors never end a
watcher, which has no task to fail (docs/watchers.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pendulum
from airflow.triggers.base import TriggerEvent

from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS, require_asset_watchers
from airflow_provider_localleads.client.values import whole_number
from airflow_provider_localleads.exceptions import LocalLeadsError, LocalLeadsInvalidArgumentError
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.planning.metrics import count_watcher_error
from airflow_provider_localleads.triggers.poll import BalancePollTrigger
from airflow_provider_localleads.triggers.watch_state import WatchState

__all__ = ["ASSET_WATCHERS_AVAILABLE", "DIRECTIONS", "CreditsResetTrigger", "CreditsThresholdTrigger"]

#: DAG files that should also load on Airflow 2 define their watched DAGs only when this is true.
ASSET_WATCHERS_AVAILABLE = AIRFLOW_V_3_0_PLUS

MODULE = "airflow_provider_localleads.triggers.events"
DIRECTIONS = ("above", "below")


class _CreditsWatcher(BalancePollTrigger):
    """What both watchers share; a subclass names its ``kind`` and implements :meth:`_observe` (the new state,
    and the event if this observation is an edge) and :meth:`_describe` (a state, for log lines)."""

    kind: ClassVar[str]
    restarts_dead_poll = True

    def __init__(self, *, localleads_conn_id: str = "localleads_default", poll_interval: float = 300.0) -> None:
        what = type(self).__name__
        require_asset_watchers(what)
        super().__init__()
        if not isinstance(localleads_conn_id, str) or not localleads_conn_id:
            raise LocalLeadsInvalidArgumentError(
                f"{what}: localleads_conn_id must be a connection id such as 'localleads_default', "
                f"got {localleads_conn_id!r}"
            )
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float) or not poll_interval > 0:
            raise LocalLeadsInvalidArgumentError(
                f"{what}: poll_interval must be a positive number of seconds (e.g. 300), got {poll_interval!r}"
            )
        self.localleads_conn_id = localleads_conn_id
        self.poll_interval = float(poll_interval)
        self._state: WatchState | None = None

    def _config(self) -> dict[str, Any]:
        return {"localleads_conn_id": self.localleads_conn_id, "poll_interval": self.poll_interval}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{MODULE}.{type(self).__name__}", self._config()

    @property
    def state_key(self) -> str:
        # Its configuration minus the poll interval: a changed interval keeps the observation.
        return f"localleads.{self.kind}.{self.localleads_conn_id}"

    @property
    def state(self) -> WatchState:
        if self._state is None:  # after construction: the triggerer injects the store in between
            self._state = WatchState(self.state_key, getattr(self, "asset_state_store", None), self.log)
        return self._state

    async def filter_shared_stream(self, stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        state = self.state
        stored = await state.load()
        if stored is not None:
            self.log.info("%s: resuming from the stored observation: %s", self._name, self._describe(stored))
        try:
            async for raw in stream:
                if isinstance(raw, CreditBalance):
                    event = await self._on_balance(raw)
                    if event is not None:
                        yield event
                else:
                    self._on_error(raw)
        except Exception as err:
            # The group's poll died (e.g. the connection does not exist). Wait an interval, so a
            # re-created watcher does not spin, then let the caller start a new poll.
            self.log.error("%s: the balance poll failed, restarting in %g s: %s", self._name, self.poll_interval, err)
            count_watcher_error(self.localleads_conn_id)
            await asyncio.sleep(self.poll_interval)
            raise
        raise LocalLeadsError(f"{self._name}: the LocalLeads balance poll ended unexpectedly")

    async def _on_balance(self, balance: CreditBalance) -> TriggerEvent | None:
        state = self.state
        previous = state.value
        current, payload = self._observe(previous, balance)
        if previous is None:
            where = "asset state store" if state.store is not None else "memory only; a restart takes a new baseline"
            self.log.info("%s: baseline %s (%s); %s", self._name, self._describe(current), where, balance.summary())
        if current != previous:
            # Stored before the event leaves: a restart right after never fires it again.
            await state.save(current)
        if payload is None:
            return None
        self.log.info(
            "%s: %s -> %s: asset event (%s)",
            self._name,
            self._describe(previous),
            self._describe(current),
            balance.summary(),
        )
        return TriggerEvent(payload)

    def _on_error(self, raw: Any) -> None:
        from airflow_provider_localleads.client.retry import is_transient  # loaded with the hook, off the loop

        if is_transient(raw):
            self.log.warning("%s: balance check failed, will retry in %g s: %s", self._name, self.poll_interval, raw)
            return
        message = str(raw) if isinstance(raw, LocalLeadsError) else f"unexpected raw event {type(raw).__name__}"
        self.log.error(
            "%s: cannot read the balance: %s. No event can fire until this is fixed; checking again in %g s",
            self._name,
            message,
            self.poll_interval,
        )
        count_watcher_error(self.localleads_conn_id)

    @property
    def _name(self) -> str:
        return f"LocalLeads {self.kind} watcher ({self.localleads_conn_id})"

    def _observe(
        self, previous: dict[str, Any] | None, balance: CreditBalance
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        raise NotImplementedError

    def _describe(self, state: dict[str, Any] | None) -> str:
        raise NotImplementedError


class CreditsResetTrigger(_CreditsWatcher):
    """One event per new ``lastResetAt`` (the monthly credits reset), payload ``{"event": "reset", "balance":
    {...}}``. A ``lastResetAt`` older than one already seen (the API going backwards) fires nothing.
    Arguments: docs/watchers.md.
    """

    kind = "reset"
    _went_back: dict[str, Any] | None = None

    def _observe(
        self, previous: dict[str, Any] | None, balance: CreditBalance
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        current = {"last_reset_at": balance.to_dict()["last_reset_at"]}
        if previous is None:
            return current, None
        seen = _timestamp(previous.get("last_reset_at"))
        if seen is None:
            self.log.warning("%s: stored observation %r is unreadable; new baseline", self._name, previous)
            return current, None
        if balance.last_reset_at > seen:
            return current, {"event": "reset", "balance": balance.to_dict()}
        if balance.last_reset_at < seen and self._went_back != current:
            self._went_back = current  # said once per value, not at every poll
            self.log.warning(
                "%s: lastResetAt went back from %s to %s; ignored",
                self._name,
                previous["last_reset_at"],
                current["last_reset_at"],
            )
        return previous, None

    def _describe(self, state: dict[str, Any] | None) -> str:
        return "nothing" if state is None else f"last reset {state.get('last_reset_at')}"


class CreditsThresholdTrigger(_CreditsWatcher):
    """One event each time ``available_credits`` crosses ``threshold`` in ``direction`` (``"above"``: from
    below to >= ``threshold``), payload ``{"event": direction, "balance": {...}, "threshold": n}``.
    Arguments: docs/watchers.md.
    """

    kind = "threshold"

    def __init__(
        self,
        threshold: int,
        direction: str = "above",
        *,
        localleads_conn_id: str = "localleads_default",
        poll_interval: float = 300.0,
    ) -> None:
        super().__init__(localleads_conn_id=localleads_conn_id, poll_interval=poll_interval)
        number = whole_number(threshold)
        if number is None or number < 0:
            raise LocalLeadsInvalidArgumentError(
                f"CreditsThresholdTrigger: threshold must be a non-negative whole number of credits (e.g. 100), "
                f"got {threshold!r} ({type(threshold).__name__})"
            )
        self.threshold = number
        if direction not in DIRECTIONS:
            raise LocalLeadsInvalidArgumentError(
                f"CreditsThresholdTrigger: direction must be 'above' or 'below', got {direction!r}"
            )
        self.direction = direction

    def _config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "direction": self.direction, **super()._config()}

    @property
    def state_key(self) -> str:
        return f"{super().state_key}.{self.direction}.{self.threshold}"

    @property
    def _name(self) -> str:
        return f"LocalLeads watcher ({self.localleads_conn_id}, {self.direction} {self.threshold})"

    def _observe(
        self, previous: dict[str, Any] | None, balance: CreditBalance
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        side = "above" if balance.available_credits >= self.threshold else "below"
        current = {"side": side, "available_credits": balance.available_credits}
        if previous is None or previous.get("side") not in DIRECTIONS:
            return current, None
        if previous["side"] == side:
            return previous, None  # same side: nothing to store, nothing to fire
        if side != self.direction:
            return current, None  # crossed back: remembered, so that the next crossing fires
        return current, {"event": side, "balance": balance.to_dict(), "threshold": self.threshold}

    def _describe(self, state: dict[str, Any] | None) -> str:
        if state is None:
            return "nothing"
        relation = ">=" if state.get("side") == "above" else "<"
        return f"{state.get('available_credits')} available ({relation} {self.threshold})"


def _timestamp(value: object) -> pendulum.DateTime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = pendulum.parse(value)
    except Exception:  # noqa: BLE001 - an unreadable stored value means a new baseline
        return None
    return parsed if isinstance(parsed, pendulum.DateTime) else None
