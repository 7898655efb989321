"""Credit watchers (CreditsResetTrigger, CreditsThresholdTrigger) against the real sandbox.

Each scenario runs a watcher as the triggerer of its Airflow line does (``run()`` before 3.3, the
``SharedStreamManager`` + ``filter_shared_stream`` on 3.3+), changes the sandbox between polls and
checks the exact sequence of events. Polls are counted by the sandbox, never timed. The restart
semantics with the real asset state store (3.3+): tests/dagrun/test_watcher_dagrun.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from loopback_support import clear_network_env
from watcher_support import INTERVAL, RecordingLog, Watching, scenario

from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError, LocalLeadsInvalidArgumentError
from airflow_provider_localleads.sandbox import SandboxServer
from airflow_provider_localleads.triggers import events
from airflow_provider_localleads.triggers import poll as _poll
from airflow_provider_localleads.triggers.credits import CreditsTrigger
from airflow_provider_localleads.triggers.events import CreditsResetTrigger, CreditsThresholdTrigger

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not AIRFLOW_V_3_0_PLUS, reason="AssetWatcher exists from Airflow 3.0 on (2.11: test_events_airflow2.py)"
    ),
]

CONN_ID = "ll_watch"
SECRET_KEY = "sk-watcher-canary-4711"


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_network_env(monkeypatch)


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """82 credits available (monthly 100 + bonus 25 - used 43), as ``ll_watch`` without hook retries."""
    with SandboxServer(api_key=SECRET_KEY) as server:
        server.set_balance(monthly=100, bonus=25, used=43)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", server.connection_json(extra={"max_retries": 0}))
        yield server


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recording = RecordingLog()
    monkeypatch.setattr(events._CreditsWatcher, "log", property(lambda self: recording))
    return recording


@pytest.fixture(params=["native", "run"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``native``: Airflow 3.3's SharedStreamManager; ``run``: ``run()`` with in-process sharing (< 3.3)."""
    if request.param == "native" and not _poll.NATIVE_SHARED_STREAMS:
        pytest.skip("SharedStreamManager exists from Airflow 3.3 on")
    if request.param == "run":
        monkeypatch.setattr(_poll, "NATIVE_SHARED_STREAMS", False)
    return str(request.param)


def reset_watcher(**kwargs: Any) -> CreditsResetTrigger:
    return CreditsResetTrigger(localleads_conn_id=CONN_ID, poll_interval=INTERVAL, **kwargs)


def threshold_watcher(threshold: int, direction: str) -> CreditsThresholdTrigger:
    return CreditsThresholdTrigger(threshold, direction, localleads_conn_id=CONN_ID, poll_interval=INTERVAL)


# ------------------------------------------------------------------------------ reset watcher


def test_reset_fires_once_per_new_last_reset_at_and_never_on_spend_or_top_up(sandbox, mode):
    async def body(w: Watching) -> None:
        seen = w.start(reset_watcher())
        await w.polls(2)  # baseline
        sandbox.spend(10)
        sandbox.top_up(30)
        await w.polls(2)
        assert seen == []
        sandbox.reset_month("2027-01-01T00:00:00Z")
        await w.polls(3)  # the same lastResetAt, polled again and again: still one event
        assert len(seen) == 1
        sandbox.spend(5)
        sandbox.reset_month("2027-02-01T00:00:00Z")
        await w.polls(3)

    events_seen = scenario(sandbox, mode, body).events[1]

    assert [e["event"] for e in events_seen] == ["reset", "reset"]
    first, second = events_seen
    assert set(first) == {"event", "balance"}  # exactly the documented payload
    assert first["balance"]["last_reset_at"] == "2027-01-01T00:00:00Z"
    assert first["balance"]["available_credits"] == 102  # bonus 25 + 30 - used 53: 2 carried over, + 100
    assert second["balance"]["last_reset_at"] == "2027-02-01T00:00:00Z"


def test_reset_ignores_a_last_reset_at_that_goes_back(sandbox, mode):
    async def body(w: Watching) -> None:
        seen = w.start(reset_watcher())
        await w.polls(2)
        sandbox.set_balance(last_reset_at="2020-01-01T00:00:00Z")  # older than the baseline
        await w.polls(2)
        sandbox.set_balance(last_reset_at=sandbox.balance()["lastResetAt"])
        assert seen == []

    assert scenario(sandbox, mode, body).events[1] == []


# --------------------------------------------------------------------------- threshold watcher


def test_above_fires_on_each_crossing_up_and_not_while_it_stays_above(sandbox, mode):
    async def body(w: Watching) -> None:
        seen = w.start(threshold_watcher(100, "above"))
        await w.polls(2)  # baseline: 82, below
        sandbox.top_up(18)  # 100: exactly the threshold counts as above
        await w.polls(3)
        sandbox.top_up(50)  # still above: nothing
        await w.polls(2)
        assert len(seen) == 1
        sandbox.spend(51)  # 99: below (remembered, no event)
        await w.polls(2)
        sandbox.top_up(1)  # 100 again: a second crossing
        await w.polls(2)

    seen = scenario(sandbox, mode, body).events[1]

    assert [(e["event"], e["threshold"], e["balance"]["available_credits"]) for e in seen] == [
        ("above", 100, 100),
        ("above", 100, 100),
    ]
    assert set(seen[0]) == {"event", "balance", "threshold"}


def test_below_fires_once_per_crossing_while_the_balance_flaps_around_the_threshold(sandbox, mode):
    async def body(w: Watching) -> None:
        seen = w.start(threshold_watcher(80, "below"))
        await w.polls(2)  # baseline: 82, above
        for _ in range(3):  # 82 -> 79 -> 82, three times
            sandbox.spend(3)
            await w.polls(2)
            sandbox.top_up(3)
            await w.polls(2)
        assert len(seen) == 3

    seen = scenario(sandbox, mode, body).events[1]

    assert [(e["event"], e["balance"]["available_credits"]) for e in seen] == [("below", 79)] * 3


@pytest.mark.parametrize(("direction", "start_used"), [("above", 0), ("below", 100)])
def test_the_first_observation_is_a_baseline_even_on_the_side_of_the_direction(sandbox, mode, direction, start_used):
    """Already above (or below) at start: that is a level, not an edge; nothing fires."""
    sandbox.set_balance(used=start_used)  # 125 or 25 available

    async def body(w: Watching) -> None:
        w.start(threshold_watcher(50, direction))
        await w.polls(4)

    assert scenario(sandbox, mode, body).events[1] == []


def test_a_5xx_burst_fires_nothing_and_a_crossing_behind_it_fires_once(sandbox, mode, log):
    async def body(w: Watching) -> None:
        up = w.start(threshold_watcher(100, "above"))
        reset = w.start(reset_watcher())
        await w.polls(2)
        sandbox.fail_next(503, times=4)
        await w.polls(4)
        assert up == []
        assert reset == []
        sandbox.fail_next(502, times=3)
        sandbox.top_up(50)  # happened during the burst: seen at the first good poll
        sandbox.reset_month()
        await w.polls(5)

    w = scenario(sandbox, mode, body)

    assert [e["event"] for e in w.events[1]] == ["above"]
    assert [e["event"] for e in w.events[2]] == ["reset"]
    warnings = log.having("balance check failed, will retry")
    assert len(warnings) == 7 * 2  # every failed poll, by both watchers
    assert {level for level, _ in warnings} == {"WARNING"}
    assert "503" in warnings[0][1]


def test_a_wrong_key_logs_an_error_and_counts_it_at_every_poll_and_polling_goes_on(sandbox, mode, log, monkeypatch):
    counted: list[str] = []
    from airflow.providers.common.compat.sdk import Stats

    monkeypatch.setattr(Stats, "incr", lambda name, *a, **k: counted.append(name))
    good = sandbox.connection_json(extra={"max_retries": 0})
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", good.replace(SECRET_KEY, "sk-wrong"))

    async def body(w: Watching) -> None:
        seen = w.start(reset_watcher())
        await w.polls(4)
        assert seen == []
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", good)  # the key is fixed: baseline, then edges
        await w.polls(2)
        sandbox.reset_month()
        await w.polls(2)

    w = scenario(sandbox, mode, body)

    assert [e["event"] for e in w.events[1]] == ["reset"]
    errors = log.having("cannot read the balance")
    assert len(errors) >= 4
    assert {level for level, _ in errors} == {"ERROR"}
    assert "401" in errors[0][1]
    assert counted.count(f"localleads.watcher_errors.{CONN_ID}") == len(errors)
    assert not any(SECRET_KEY in line or "sk-wrong" in line for _, line in log.records)


def test_a_dead_poll_is_logged_counted_and_replaced_without_losing_the_baseline(sandbox, log, monkeypatch):
    """``run()`` (Airflow < 3.3): the connection disappears (the poll raises), comes back: the watcher
    never ended, kept its baseline (so the reset made meanwhile still fires, once)."""
    monkeypatch.setattr(_poll, "NATIVE_SHARED_STREAMS", False)
    good = sandbox.connection_json(extra={"max_retries": 0})

    async def body(w: Watching) -> None:
        seen = w.start(reset_watcher())
        await w.polls(2)
        monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")
        await asyncio.sleep(INTERVAL * 4)
        sandbox.reset_month()
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", good)
        await w.polls(3)
        assert [e["event"] for e in seen] == ["reset"]

    scenario(sandbox, "run", body)
    assert log.having("the balance poll failed, restarting")[0][0] == "ERROR"


# --------------------------------------------------------------------- sharing and restarts


def test_watchers_and_credits_triggers_share_one_poll(sandbox, mode):
    """A reset watcher, two threshold watchers and a waiting CreditsTrigger: one group, one poll."""
    triggers = [
        reset_watcher(),
        threshold_watcher(100, "above"),
        threshold_watcher(50, "below"),
        CreditsTrigger(estimated_cost=10_000, localleads_conn_id=CONN_ID, poll_interval=INTERVAL),
    ]
    assert len({t.shared_stream_key() for t in triggers}) == 1

    async def body(w: Watching) -> None:
        for trigger in triggers:
            w.start(trigger)
        await w.polls(3)
        groups = w.manager._groups if w.native else _poll._PollGroup._registry[asyncio.get_running_loop()]
        assert len(groups) == 1  # the triggerer opened one poll for all four
        sandbox.top_up(50)
        await w.polls(3)

    w = scenario(sandbox, mode, body)

    assert [e["event"] for e in w.events[2]] == ["above"]
    assert w.events[1] == w.events[3] == w.events[4] == []


def test_the_shared_raw_stream_comes_from_whichever_class_opened_the_group(sandbox, mode):
    """The triggerer opens the group's poll with the FIRST subscriber's class and kwargs: a threshold
    watcher first, then a CreditsTrigger that fires from that same stream."""

    async def body(w: Watching) -> None:
        w.start(threshold_watcher(90, "above"))
        await w.polls(2)
        w.start(CreditsTrigger(estimated_cost=120, localleads_conn_id=CONN_ID, poll_interval=INTERVAL))
        await w.polls(2)
        sandbox.top_up(40)  # 122
        await w.polls(3)

    w = scenario(sandbox, mode, body)
    assert [e["event"] for e in w.events[1]] == ["above"]
    assert [e["status"] for e in w.events[2]] == ["success"]


def test_without_a_store_a_restart_takes_a_new_baseline_missing_a_change_made_meanwhile(sandbox, mode):
    """Airflow 3.0-3.2 (no asset state store): what a triggerer restart does, exactly as documented."""

    async def first_life(w: Watching) -> None:
        w.start(reset_watcher())
        w.start(threshold_watcher(100, "above"))
        await w.polls(2)
        sandbox.reset_month("2027-01-01T00:00:00Z")
        await w.polls(2)

    before = scenario(sandbox, mode, first_life)
    assert [e["event"] for e in before.events[1]] == ["reset"]
    # The triggerer is down: the month resets again and credits cross 100.
    sandbox.reset_month("2027-02-01T00:00:00Z")
    sandbox.top_up(200)

    async def second_life(w: Watching) -> None:
        w.start(reset_watcher())  # new trigger objects, as a new triggerer builds them
        w.start(threshold_watcher(100, "above"))
        await w.polls(4)

    after = scenario(sandbox, mode, second_life)
    assert after.events == {1: [], 2: []}  # missed, and nothing repeated


class PublicStore:
    """A state store with only the public single-asset methods (``aget``/``aset``), no accessor to list."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.values: dict[str, Any] = {}
        self.calls: list[str] = []
        self.fail_with = fail_with

    async def aget(self, key: str, default: Any = None) -> Any:
        self.calls.append("aget")
        if self.fail_with is not None:
            raise self.fail_with
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.calls.append("aset")
        if self.fail_with is not None:
            raise self.fail_with
        self.values[key] = value


def with_store(trigger: Any, store: Any) -> Any:
    trigger.asset_state_store = store  # as the triggerer injects it (3.3+)
    return trigger


def test_a_store_is_used_through_its_public_methods_and_a_restart_resumes_from_it(sandbox, mode):
    store = PublicStore()

    async def first_life(w: Watching) -> None:
        w.start(with_store(reset_watcher(), store))
        await w.baselines()

    scenario(sandbox, mode, first_life)
    seen = sandbox.balance()["lastResetAt"].replace(".000Z", "Z")
    assert store.values == {f"localleads.reset.{CONN_ID}": {"last_reset_at": seen}}
    sandbox.reset_month("2027-01-01T00:00:00Z")  # while down

    async def second_life(w: Watching) -> None:
        w.start(with_store(reset_watcher(), store))
        await w.polls(3)

    assert [e["event"] for e in scenario(sandbox, mode, second_life).events[1]] == ["reset"]  # once
    assert store.values[f"localleads.reset.{CONN_ID}"] == {"last_reset_at": "2027-01-01T00:00:00Z"}


def test_a_store_that_cannot_address_one_asset_is_said_once_and_memory_kept(sandbox, mode, log):
    """``AssetStateStoreAccessors`` over several assets raises ValueError: never a silent loss."""
    store = PublicStore(fail_with=ValueError("Task has 2 concrete inlets and outlets"))

    async def body(w: Watching) -> None:
        w.start(with_store(reset_watcher(), store))
        await w.baselines()
        sandbox.reset_month("2027-01-01T00:00:00Z")
        await w.polls(3)

    assert [e["event"] for e in scenario(sandbox, mode, body).events[1]] == ["reset"]
    assert store.calls == ["aget"]  # not asked again
    [(level, line)] = log.having("asset state store cannot keep")
    assert level == "WARNING"
    assert "a triggerer restart takes a new baseline" in line
    assert log.having("memory only; a restart takes a new baseline")


def test_a_failing_store_is_logged_and_the_watcher_goes_on_from_memory(sandbox, mode, log):
    store = PublicStore(fail_with=RuntimeError("store down"))

    async def body(w: Watching) -> None:
        w.start(with_store(reset_watcher(), store))
        await w.baselines()
        sandbox.reset_month("2027-01-01T00:00:00Z")
        await w.polls(3)

    assert [e["event"] for e in scenario(sandbox, mode, body).events[1]] == ["reset"]
    assert {level for level, _ in log.having("in the asset state store (store down)")} == {"WARNING"}
    assert store.calls.count("aset") == 2  # the baseline and the reset: each write tried


# --------------------------------------------------------------------- construction, serialization


def test_serialize_round_trip_holds_only_the_configuration_and_no_secret(sandbox):
    for original in (
        CreditsResetTrigger(localleads_conn_id="llc", poll_interval=60),
        CreditsThresholdTrigger(500, "below", localleads_conn_id="llc", poll_interval=60),
        CreditsThresholdTrigger("7"),
    ):
        classpath, kwargs = original.serialize()
        module, _, name = classpath.rpartition(".")
        assert module == "airflow_provider_localleads.triggers.events"
        assert all(isinstance(v, str | int | float) for v in kwargs.values())
        assert SECRET_KEY not in repr(kwargs)
        assert SECRET_KEY not in repr(original)
        rebuilt = getattr(events, name)(**kwargs)
        assert rebuilt.serialize() == (classpath, kwargs)
        assert rebuilt.shared_stream_key() == original.shared_stream_key()
    assert CreditsResetTrigger().serialize()[1] == {"localleads_conn_id": "localleads_default", "poll_interval": 300.0}
    assert CreditsThresholdTrigger(100).serialize()[1] == {
        "threshold": 100,
        "direction": "above",
        "localleads_conn_id": "localleads_default",
        "poll_interval": 300.0,
    }


def test_watchers_are_asset_watcher_triggers():
    from airflow.sdk import Asset, AssetWatcher

    watcher = AssetWatcher(name="localleads_reset", trigger=CreditsResetTrigger())
    asset = Asset("localleads_credits_low", watchers=[AssetWatcher(name="low", trigger=CreditsThresholdTrigger(5))])
    assert watcher.trigger.serialize()[0].endswith("CreditsResetTrigger")
    assert asset.watchers[0].name == "low"


@pytest.mark.parametrize("value", [-1, "abc", "-5", "1.5", 1.5, True, None])
def test_a_bad_threshold_is_refused_naming_the_field(value):
    with pytest.raises(LocalLeadsInvalidArgumentError, match="threshold must be a non-negative whole number"):
        CreditsThresholdTrigger(value)


@pytest.mark.parametrize("direction", ["up", "ABOVE", "", None])
def test_a_bad_direction_is_refused_at_once(direction):
    with pytest.raises(LocalLeadsInvalidArgumentError, match="direction must be 'above' or 'below'"):
        CreditsThresholdTrigger(100, direction)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"poll_interval": 0}, "poll_interval"), ({"localleads_conn_id": ""}, "conn_id")]
)
def test_bad_common_arguments_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(LocalLeadsInvalidArgumentError, match=field):
        CreditsResetTrigger(**kwargs)


def test_on_airflow_2_constructing_a_watcher_says_it_needs_airflow_3(monkeypatch):
    """2.11 itself is tested by tests/triggers/test_events_airflow2.py; here the branch, on any line."""
    from airflow_provider_localleads import _compat

    monkeypatch.setattr(_compat, "AIRFLOW_V_3_0_PLUS", False)
    with pytest.raises(LocalLeadsConfigurationError, match=r"needs Airflow 3 .*AssetWatcher"):
        CreditsResetTrigger()
