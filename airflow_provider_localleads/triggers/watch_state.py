"""Where a credit watcher keeps its last observation: the asset state store (3.3+) or memory.

Airflow 3.3's triggerer gives a watcher trigger ``asset_state_store`` (an ``AssetStateStoreAccessors``
over the assets it watches, persisted in the metadata database), so a triggerer restart resumes from
what was last seen. Before 3.3, under ``dag.test()`` and in plain unit tests there is none: the
observation lives in the trigger object only.

Only the store's public ``aget``/``aset`` are used; they address the watched asset when there is exactly
one. Watchers with identical kwargs share one trigger row, which may then watch several assets; the
trigger knows none of their names, so the store cannot say which to use (``ValueError``): the watcher
then keeps its observation in memory, as before 3.3, and says so once. A store that fails otherwise
never stops the watcher either: it logs and carries on from memory.
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

    @property
    def persistent(self) -> bool:
        return self.store is not None

    async def load(self) -> dict[str, Any] | None:
        """The stored observation (once per trigger object; afterwards the one in memory)."""
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
        """Keep ``value`` in the store, when there is one, and then in memory.

        Memory last: whoever sees the new value (a test waiting for a baseline) sees it stored too.
        """
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
