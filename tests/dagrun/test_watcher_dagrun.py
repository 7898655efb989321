"""Credit watchers with the metadata database: the asset state store (3.3+) and asset events (3.x).

A DAG scheduled on an asset with a watcher is written to the SQLite metadata database as the
dag-processor would. The watcher then runs exactly as the triggerer builds it: rebuilt from its
serialized kwargs, with ``asset_state_store = AssetStateStoreAccessors(inlets=[the watched assets])``
(``TriggerRunner.create_triggers``), and its store messages answered by the triggerer's own request
handlers over the in-process Execution API (``TriggerRunnerSupervisor._handle_request``). A
"restart" is a new trigger object over the same database, as a new triggerer builds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from watcher_support import INTERVAL, RecordingLog, Watching, scenario

from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS, airflow_version
from airflow_provider_localleads.sandbox import SandboxServer
from airflow_provider_localleads.triggers import events
from airflow_provider_localleads.triggers.events import CreditsResetTrigger, CreditsThresholdTrigger

pytestmark = [
    pytest.mark.dagrun,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="AssetWatcher exists from Airflow 3.0 on"),
]

CONN_ID = "ll_watch_db"
HAS_STORE = AIRFLOW_V_3_0_PLUS and str(airflow_version()) >= "3.3"
needs_store = pytest.mark.skipif(not HAS_STORE, reason="the asset state store exists from Airflow 3.3 on")


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        server.set_balance(monthly=100, bonus=25, used=43)  # 82 available
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", server.connection_json(extra={"max_retries": 0}))
        yield server


class TriggererComms:
    """The triggerer supervisor's side of the asset state store messages, over the real metadata DB."""

    def __init__(self) -> None:
        from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
        from airflow.sdk.api.client import Client

        self.client = Client(base_url=None, token="", dry_run=True, transport=InProcessExecutionAPI().transport)
        self.client.base_url = "http://in-process.invalid./"  # as TriggerRunnerSupervisor.make_client
        self.messages: list[str] = []

    async def asend(self, msg: Any) -> Any:
        self.messages.append(type(msg).__name__)
        return await asyncio.to_thread(self._handle, msg)

    def _handle(self, msg: Any) -> Any:
        from airflow.sdk.execution_time import comms, request_handlers

        if isinstance(msg, comms.GetAssetStateStoreByName):
            return request_handlers.handle_get_asset_state_store_by_name(self.client, msg)[0]
        if isinstance(msg, comms.SetAssetStateStoreByName):
            request_handlers.handle_set_asset_state_store_by_name(self.client, msg)
            return comms.OKResponse(ok=True)
        raise AssertionError(f"unexpected message {msg!r}")


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> TriggererComms:
    from airflow.sdk.execution_time import task_runner

    channel = TriggererComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)
    asyncio.run(channel.asend(_warm_up_message()))  # the in-process API starts (seconds) before any watcher
    channel.messages.clear()
    return channel


def _warm_up_message() -> Any:
    from airflow.sdk.execution_time.comms import GetAssetStateStoreByName

    return GetAssetStateStoreByName(name="localleads_no_such_asset", key="warm-up")


def watched_dag(sync_dag: Any, name: str, *triggers: Any, unpaused: bool = False) -> list[str]:
    """A DAG scheduled on asset ``name`` whose watchers are ``triggers``; returns the asset names.

    ``unpaused``: then written again, as the dag-processor's next parse does, which creates the watcher's
    trigger row (watchers run only for assets of active, unpaused DAGs)."""
    from airflow.providers.common.compat.sdk import DAG, BaseOperator
    from airflow.sdk import Asset, AssetWatcher

    class Refresh(BaseOperator):
        def execute(self, context: Any) -> None:
            return None

    watchers = [AssetWatcher(name=f"{name}_{i}", trigger=t) for i, t in enumerate(triggers)]
    asset = Asset(name, watchers=watchers)
    with DAG(f"{name}_dag", schedule=[asset], start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False) as dag:
        Refresh(task_id="refresh")
    sync_dag(dag)
    if unpaused:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        with create_session() as session:
            session.get(DagModel, dag.dag_id).is_paused = False
        sync_dag(dag)
    return [name]


def as_the_triggerer_builds_it(trigger: Any, assets: list[str]) -> Any:
    """Rebuilt from its serialized form, with the store injected (``TriggerRunner.create_triggers``)."""
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import AssetStateStoreAccessors

    classpath, kwargs = trigger.serialize()
    rebuilt = getattr(events, classpath.rpartition(".")[2])(**kwargs)
    rebuilt.asset_state_store = AssetStateStoreAccessors(inlets=[Asset(name=name) for name in assets])
    return rebuilt


def reset_watcher() -> CreditsResetTrigger:
    return CreditsResetTrigger(localleads_conn_id=CONN_ID, poll_interval=INTERVAL)


def below_watcher() -> CreditsThresholdTrigger:
    return CreditsThresholdTrigger(50, "below", localleads_conn_id=CONN_ID, poll_interval=INTERVAL)


@needs_store
def test_a_restart_neither_repeats_an_event_nor_misses_a_change_made_while_down(sandbox, sync_dag, comms):
    assets = watched_dag(sync_dag, "localleads_store_restart", reset_watcher(), below_watcher())

    async def first_life(w: Watching) -> None:
        w.start(as_the_triggerer_builds_it(reset_watcher(), assets))
        w.start(as_the_triggerer_builds_it(below_watcher(), assets))
        await w.baselines()  # taken, and stored
        sandbox.reset_month("2027-01-01T00:00:00Z")  # 100 + carried bonus 0: 100 available
        sandbox.spend(60)  # 40: below 50
        await w.polls(3)

    life1 = scenario(sandbox, "native" if _native() else "run", first_life)
    assert [e["event"] for e in life1.events[1]] == ["reset"]
    assert [e["event"] for e in life1.events[2]] == ["below"]

    async def quiet_restart(w: Watching) -> None:  # nothing changed while down: nothing fires
        w.start(as_the_triggerer_builds_it(reset_watcher(), assets))
        w.start(as_the_triggerer_builds_it(below_watcher(), assets))
        await w.baselines()
        await w.polls(3)

    assert scenario(sandbox, "native" if _native() else "run", quiet_restart).events == {1: [], 2: []}

    # Down again: the month resets (100 available: back above 50), then 70 are spent (30: below).
    sandbox.reset_month("2027-02-01T00:00:00Z")
    sandbox.top_up(10)
    sandbox.spend(80)

    async def restart_after_changes(w: Watching) -> None:
        w.start(as_the_triggerer_builds_it(reset_watcher(), assets))
        w.start(as_the_triggerer_builds_it(below_watcher(), assets))
        await w.baselines()
        await w.polls(3)

    life3 = scenario(sandbox, "native" if _native() else "run", restart_after_changes)
    # The reset made while down fires once. The balance went 40 -> 110 -> 30 while down: no observation
    # saw it above 50, so there was no crossing to see (polling can only see what it polls).
    assert [(e["event"], e["balance"]["last_reset_at"]) for e in life3.events[1]] == [("reset", "2027-02-01T00:00:00Z")]
    assert life3.events[2] == []

    sandbox.top_up(100)  # 130 while down: above, remembered without an event
    scenario(sandbox, "run", quiet_restart)
    sandbox.spend(110)  # 20 while down: a crossing below, seen at the first poll after the restart

    life5 = scenario(sandbox, "run", restart_after_changes)
    assert life5.events[1] == []
    assert [(e["event"], e["balance"]["available_credits"]) for e in life5.events[2]] == [("below", 20)]
    assert {"GetAssetStateStoreByName", "SetAssetStateStoreByName"} <= set(comms.messages)


@needs_store
def test_the_observation_is_in_the_asset_state_store_under_the_watchers_key(sandbox, sync_dag, comms):
    assets = watched_dag(sync_dag, "localleads_store_key", reset_watcher())

    async def life(w: Watching) -> None:
        w.start(as_the_triggerer_builds_it(reset_watcher(), assets))
        await w.baselines()

    scenario(sandbox, "run", life)

    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import AssetStateStoreAccessors

    stored = asyncio.run(AssetStateStoreAccessors(inlets=[Asset(name=assets[0])]).aget(f"localleads.reset.{CONN_ID}"))
    assert stored == {"last_reset_at": sandbox.balance()["lastResetAt"].replace(".000Z", "Z")}


@needs_store
def test_identical_watchers_on_two_assets_keep_memory_only_and_say_so_once(sandbox, sync_dag, comms, monkeypatch):
    """One trigger row for two assets: the store's public aget/aset cannot tell which asset (the trigger
    knows neither name), so the observation stays in memory, said once; a restart takes a new baseline."""
    log = RecordingLog()
    monkeypatch.setattr(events._CreditsWatcher, "log", property(lambda self: log))
    assets = watched_dag(sync_dag, "localleads_two_a", reset_watcher()) + watched_dag(
        sync_dag, "localleads_two_b", reset_watcher()
    )

    async def life(w: Watching) -> None:
        w.start(as_the_triggerer_builds_it(reset_watcher(), assets))
        await w.baselines()
        sandbox.reset_month("2027-04-01T00:00:00Z")
        await w.polls(3)

    assert [e["event"] for e in scenario(sandbox, "run", life).events[1]] == ["reset"]  # it still watches
    assert len(log.having("asset state store cannot keep")) == 1  # said once, not at every save
    assert log.having("memory only; a restart takes a new baseline")
    assert not [m for m in comms.messages if "AssetStateStore" in m]  # nothing sent to a store it cannot address
    sandbox.reset_month("2027-05-01T00:00:00Z")  # while down: missed, as documented

    async def restart(w: Watching) -> None:
        w.start(as_the_triggerer_builds_it(reset_watcher(), assets))
        await w.baselines()
        await w.polls(3)

    assert scenario(sandbox, "run", restart).events == {1: []}


def test_an_event_becomes_an_asset_event_and_queues_the_watching_dag(sandbox, sync_dag):
    """What the triggerer does with a watcher's event (``Trigger.submit_event``): one asset event with the
    payload, and the DAG scheduled on the asset queued for one run."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    assets = watched_dag(sync_dag, "localleads_asset_event", reset_watcher(), unpaused=True)

    async def life(w: Watching) -> None:
        w.start(reset_watcher())
        await w.polls(2)
        sandbox.reset_month("2027-03-01T00:00:00Z")
        await w.polls(3)

    [payload] = scenario(sandbox, "run", life).events[1]
    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.name == assets[0])).one()
        [trigger_id] = [t.id for t in asset.triggers]
    from airflow.triggers.base import TriggerEvent

    Trigger.submit_event(trigger_id, TriggerEvent(payload))
    with create_session() as session:
        asset_events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)).all()
        queued = session.scalars(select(AssetDagRunQueue).where(AssetDagRunQueue.asset_id == asset.id)).all()
    assert [e.extra for e in asset_events] == [{"from_trigger": True, "payload": payload}]
    assert [q.target_dag_id for q in queued] == ["localleads_asset_event_dag"]


def _native() -> bool:
    from airflow_provider_localleads.triggers import poll as _poll

    return _poll.NATIVE_SHARED_STREAMS
