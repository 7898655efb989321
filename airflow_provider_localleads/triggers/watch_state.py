"""Where a credit watcher keeps its last observation: the asset state store (3.3+) or memory.

Airflow 3.3's triggerer gives a watcher trigger ``asset_state_store`` (an ``AssetStateStoreAccessors``
over the assets it watches, persisted in the metadata database), so a triggerer restart resumes from
what was last seen. Before 3.3, under ``dag.test()`` and in plain unit tests there is none: the
observation lives in the trigger object only.

Watchers with identical kwargs share one trigger row, which may then watch several assets: the
observation is written to each of them and read from the first that holds one. A store that fails
never stops the watcher: it logs and carries on from memory.
"""

from __future__ import annotations

from typing import Any


def _accessors(store: Any) -> list[Any]:
    """One accessor per watched asset (``AssetStateStoreAccessors`` offers ``aget`` only for one asset)."""
    by_name = getattr(store, "_by_name", None)
    by_uri = getattr(store, "_by_uri", None)
    if isinstance(by_name, dict) and isinstance(by_uri, dict):
        return [*by_name.values(), *by_uri.values()]
    return [store]  # anything else with aget/aset (a future Airflow, a test double)


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
        if self.store is None:
            return None
        for accessor in _accessors(self.store):
            try:
                stored = await accessor.aget(self.key)
            except Exception as err:  # noqa: BLE001 - a watcher without its store still watches
                self.log.warning(
                    "Could not read %r from the asset state store (%s); starting from memory", self.key, err
                )
                return None
            if isinstance(stored, dict):
                self.value = stored
                return stored
            if stored is not None:
                self.log.warning("Ignoring unreadable %r in the asset state store: %r", self.key, stored)
        return None

    async def save(self, value: dict[str, Any]) -> None:
        """Keep ``value`` in every watched asset's store, when there is one, and then in memory.

        Memory last: whoever sees the new value (a test waiting for a baseline) sees it stored too.
        """
        if self.store is not None:
            for accessor in _accessors(self.store):
                try:
                    await accessor.aset(self.key, value)
                except Exception as err:  # noqa: BLE001 - see load()
                    self.log.warning("Could not write %r to the asset state store (%s); kept in memory", self.key, err)
        self.value = value
