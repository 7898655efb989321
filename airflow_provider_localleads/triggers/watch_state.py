"""Where a credit watcher keeps its last observation: Airflow 3.3's ``asset_state_store`` (so a triggerer
restart resumes from what was last seen), or memory (before 3.3, ``dag.test()``, unit tests).

The store's public ``aget``/``aset`` address the watched asset only when there is exactly one; identical
watchers on several assets share one trigger, which knows none of their names, so those stay in memory.
"""

from __future__ import annotations

from typing import Any


class WatchState:
    """The last observation of one watcher, under ``key``; ``store`` is the trigger's ``asset_state_store``."""

    def __init__(self, key: str, store: Any, log: Any) -> None:
        self.key = key
        self.store = store
        self.log = log
        self.value: dict[str, Any] | None = None
        self.loaded = False

    async def load(self) -> dict[str, Any] | None:
        """The stored observation, read once per trigger object."""
        if self.loaded:
            return self.value
        self.loaded = True
        stored = await self._call("read", "aget")
        if isinstance(stored, dict):
            self.value = stored
            return stored
        if stored is not None:
            self.log.warning("Ignoring unreadable %r in the asset state store: %r", self.key, stored)
        return None

    async def save(self, value: dict[str, Any]) -> None:
        """Memory last: whoever sees the new value (a test waiting for a baseline) sees it stored too."""
        await self._call("write", "aset", value)
        self.value = value

    async def _call(self, what: str, method: str, *args: Any) -> Any:
        if self.store is None:
            return None
        try:
            return await getattr(self.store, method)(self.key, *args)
        except ValueError as err:  # not exactly one watched asset: nothing to address without its name
            self.log.warning(
                "The asset state store cannot keep %r (%s): identical watchers on several assets share one "
                "trigger, which cannot tell them apart. Kept in memory only: a triggerer restart takes a new baseline",
                self.key,
                err,
            )
            self.store = None
        except Exception as err:  # noqa: BLE001 - a watcher without its store still watches
            self.log.warning("Could not %s %r in the asset state store (%s); kept in memory", what, self.key, err)
        return None
