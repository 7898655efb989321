"""One balance poll per connection and interval, however many CreditsTriggers wait on it.

Every test runs twice: through Airflow 3.3's ``SharedStreamManager`` exactly as the triggerer drives
it (skipped before 3.3), and through ``run()`` with the provider's in-process sharing (what the
triggerer of Airflow < 3.3 gets). The sandbox counts the requests. No timings are asserted: the
poll intervals are short only so that the tests are quick.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loopback_support import clear_network_env
from sharing_support import BALANCE_PATH, CONN_ID, Triggerer, balance_requests, make_trigger, run_alone, settle, until

from airflow_provider_localleads.sandbox import SandboxServer
from airflow_provider_localleads.triggers import credits
from airflow_provider_localleads.triggers import poll as _poll

INTERVAL = 0.05


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_network_env(monkeypatch)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox with 0 credits available, so thresholds are met only by the test's top-ups."""
    with SandboxServer() as server:
        server.set_balance(monthly=0, bonus=0, used=0)
        yield server


@pytest.fixture
def conn_id(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Conn id ``ll_shared`` pointing at ``sandbox``; no hook-level retries, so every fault reaches the trigger."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sandbox.connection_json(extra={"max_retries": 0}))
    return CONN_ID


@pytest.fixture(params=["shared_stream_manager", "run_in_process"])
def triggerer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Triggerer]:
    if request.param == "shared_stream_manager":
        if not _poll.NATIVE_SHARED_STREAMS:
            pytest.skip("SharedStreamManager exists from Airflow 3.3 on")
        yield Triggerer(native=True)
    else:
        monkeypatch.setattr(_poll, "NATIVE_SHARED_STREAMS", False)
        yield Triggerer(native=False)


def _poll_gaps(sandbox: SandboxServer) -> list[float]:
    stamps = [r.at.timestamp() for r in sandbox.requests if r.path == BALANCE_PATH]
    return [b - a for a, b in itertools.pairwise(stamps)]


def test_many_triggers_share_one_poll_and_each_fires_on_its_own_threshold(
    sandbox: SandboxServer, conn_id: str, triggerer: Triggerer
) -> None:
    costs = [10, 20, 20, 30, 40, 40, 40, 50] * 5  # 40 triggers, five thresholds
    outcome: dict[int, list[dict[str, Any]]] = {}

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = [triggerer.start(make_trigger(conn_id, cost, poll_interval=INTERVAL)) for cost in costs]
        try:
            await until(lambda: balance_requests(sandbox) >= 3, what="three polls")
            assert not any(task.done() for task in tasks)  # 0 credits: nobody fires
            for level in (10, 20, 30, 40, 50):
                sandbox.top_up(10)  # available: 10, 20, 30, 40, 50
                due = [i for i, cost in enumerate(costs) if cost <= level]
                await until(lambda due=due: all(tasks[i].done() for i in due), what=f"triggers up to {level}")
                await settle(INTERVAL, 2)  # one more poll at this level: still nobody else fires
                assert {i for i, task in enumerate(tasks) if task.done()} == set(due)
            for i, task in enumerate(tasks):
                outcome[i] = task.result()
        finally:
            await triggerer.stop(tasks)
        return loop.time() - started

    elapsed = asyncio.run(scenario())

    for i, events in outcome.items():
        assert len(events) == 1, events
        event = events[0]
        assert event["status"] == "success"
        assert event["estimated_cost"] == costs[i]
        # Fired on the first balance that covered it: its own threshold, not another trigger's.
        assert event["balance"]["available_credits"] == costs[i]
    # One request per poll interval for all 40 triggers (one-per-trigger would be 40 per interval).
    polls = balance_requests(sandbox)
    assert polls <= elapsed / INTERVAL + 2, (polls, elapsed)
    assert min(_poll_gaps(sandbox)) >= INTERVAL * 0.9  # never two polls within one interval


def test_cancelled_triggers_release_their_share_and_the_poll_stops_with_the_last(
    sandbox: SandboxServer, conn_id: str, triggerer: Triggerer
) -> None:
    async def scenario() -> None:
        tasks = [triggerer.start(make_trigger(conn_id, 100, poll_interval=INTERVAL)) for _ in range(6)]
        try:
            await until(lambda: balance_requests(sandbox) >= 2, what="two polls")
            for task in tasks[:3]:  # e.g. the user marked these tasks failed
                task.cancel()
            await asyncio.gather(*tasks[:3], return_exceptions=True)
            before = balance_requests(sandbox)
            await settle(INTERVAL)
            assert balance_requests(sandbox) > before, "the others still wait, so polling goes on"

            sandbox.top_up(100)
            await until(lambda: all(task.done() for task in tasks[3:]), what="the remaining triggers")
            assert all(task.result()[0]["status"] == "success" for task in tasks[3:])

            # Everyone has left: the group's poll stops.
            stopped_at = balance_requests(sandbox)
            await settle(INTERVAL, 6)
            assert balance_requests(sandbox) == stopped_at

            # A newcomer with the same key starts a fresh poll (no dead group left behind).
            late = triggerer.start(make_trigger(conn_id, 50, poll_interval=INTERVAL))
            await until(late.done, what="the late trigger")
            assert late.result()[0]["status"] == "success"
            assert balance_requests(sandbox) == stopped_at + 1
        finally:
            await triggerer.stop(tasks)

    asyncio.run(scenario())


def test_only_cancelled_subscribers_leave(sandbox: SandboxServer, conn_id: str, triggerer: Triggerer) -> None:
    """Cancelling every other trigger while the poll is running leaves the rest subscribed and firing."""

    async def scenario() -> list[Any]:
        tasks = [triggerer.start(make_trigger(conn_id, 10 + i % 3, poll_interval=INTERVAL)) for i in range(30)]
        try:
            await until(lambda: balance_requests(sandbox) >= 1, what="the first poll")
            for task in tasks[::2]:
                task.cancel()
            sandbox.top_up(12)
            await until(lambda: all(task.done() for task in tasks), what="every trigger to end")
            return [task.exception() if task.cancelled() is False else "cancelled" for task in tasks]
        finally:
            await triggerer.stop(tasks)

    ends = asyncio.run(scenario())
    assert ends[::2] == ["cancelled"] * 15
    assert ends[1::2] == [None] * 15


def test_a_permanent_error_reaches_every_waiter(
    sandbox: SandboxServer, triggerer: Triggerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_LL_WRONG_KEY",
        sandbox.connection_json(extra={"max_retries": 0}).replace(sandbox.api_key, "not-the-key"),
    )

    async def scenario() -> list[list[dict[str, Any]]]:
        tasks = [triggerer.start(make_trigger("ll_wrong_key", 10 * i, poll_interval=INTERVAL)) for i in range(10)]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*tasks), 30))
        finally:
            await triggerer.stop(tasks)

    results = asyncio.run(scenario())
    for events in results:
        assert len(events) == 1
        assert events[0]["status"] == "error"
        assert events[0]["error_type"] == "LocalLeadsAuthenticationError"
        assert events[0]["transient"] is False
        assert "not-the-key" not in events[0]["message"]
    # One poll told all ten; they left, and the group stopped with them.
    assert balance_requests(sandbox) <= 2
    assert all(not r.auth_valid for r in sandbox.requests)


def test_a_poll_that_dies_reaches_every_waiter(
    sandbox: SandboxServer, triggerer: Triggerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection does not exist: the poll raises (not an API error), and every waiter hears of it."""
    monkeypatch.delenv("AIRFLOW_CONN_LL_MISSING", raising=False)

    async def scenario() -> list[list[dict[str, Any]]]:
        tasks = [triggerer.start(make_trigger("ll_missing", 5, poll_interval=INTERVAL)) for _ in range(5)]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*tasks), 30))
        finally:
            await triggerer.stop(tasks)

    for events in asyncio.run(scenario()):
        assert len(events) == 1
        assert events[0]["status"] == "error"
        assert "ll_missing" in events[0]["message"]
    assert balance_requests(sandbox) == 0


def test_a_burst_of_transient_errors_is_ridden_out(sandbox: SandboxServer, conn_id: str, triggerer: Triggerer) -> None:
    sandbox.set_balance(monthly=100)
    sandbox.fail_next(503, times=2, path=BALANCE_PATH)
    sandbox.rate_limit_next(retry_after="0", times=1, path=BALANCE_PATH)
    sandbox.fail_next(502, times=1, path=BALANCE_PATH, body="<html>Bad gateway</html>", content_type="text/html")

    async def scenario() -> list[list[dict[str, Any]]]:
        tasks = [triggerer.start(make_trigger(conn_id, 20 * i, poll_interval=INTERVAL)) for i in range(1, 6)]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*tasks), 30))
        finally:
            await triggerer.stop(tasks)

    results = asyncio.run(scenario())
    assert [events[0]["status"] for events in results] == ["success"] * 5
    statuses = [r.status for r in sandbox.requests if r.path == BALANCE_PATH]
    assert statuses == [503, 503, 429, 502, 200]  # one shared poll rode the burst out for all five


def test_the_timeout_fires_while_the_shared_stream_is_quiet(
    sandbox: SandboxServer, conn_id: str, triggerer: Triggerer
) -> None:
    """``end_at`` is enforced by the trigger itself, not by the next raw event (an hour away here)."""

    async def scenario() -> list[list[dict[str, Any]]]:
        soon = time.time() + 0.3
        tasks = [
            triggerer.start(make_trigger(conn_id, 10, poll_interval=3600, end_at=soon)),
            triggerer.start(make_trigger(conn_id, 20, poll_interval=3600, end_at=soon + 0.2)),
            triggerer.start(make_trigger(conn_id, 30, poll_interval=3600, end_at=time.time() - 1)),  # already due
            triggerer.start(make_trigger(conn_id, 40, poll_interval=3600, end_at=None)),  # never times out
        ]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*tasks[:3]), 30))
        finally:
            assert not tasks[3].done()
            await triggerer.stop(tasks)

    first, second, past = asyncio.run(scenario())
    assert first[0]["status"] == second[0]["status"] == past[0]["status"] == "timeout"
    assert "10 LocalLeads credits" in first[0]["message"]
    # The one poll that ran before the quiet hour is reported as the last balance seen.
    assert first[0]["balance"]["available_credits"] == 0
    assert balance_requests(sandbox) == 1


def test_triggers_on_other_connections_or_intervals_poll_separately(
    sandbox: SandboxServer, conn_id: str, triggerer: Triggerer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LL_OTHER", sandbox.connection_json(extra={"max_retries": 0}))
    sandbox.set_balance(monthly=100)

    async def scenario() -> None:
        tasks = [
            triggerer.start(make_trigger(conn_id, 500, poll_interval=3600)),
            triggerer.start(make_trigger(conn_id, 500, poll_interval=3600)),
            triggerer.start(make_trigger("ll_other", 500, poll_interval=3600)),
            triggerer.start(make_trigger(conn_id, 500, poll_interval=1800)),
        ]
        try:
            await until(lambda: balance_requests(sandbox) >= 3, what="three groups' first polls")
            await settle(INTERVAL)
        finally:
            await triggerer.stop(tasks)

    asyncio.run(scenario())
    assert balance_requests(sandbox) == 3  # (ll_shared, 3600) x2, (ll_other, 3600), (ll_shared, 1800)


def test_the_shared_key_is_configuration_only() -> None:
    a = make_trigger("conn_a", 10, poll_interval=300)
    assert a.shared_stream_key() == make_trigger("conn_a", 999, poll_interval=300.0, end_at=1.0).shared_stream_key()
    assert a.shared_stream_key() != make_trigger("conn_b", 10, poll_interval=300).shared_stream_key()
    assert a.shared_stream_key() != make_trigger("conn_a", 10, poll_interval=60).shared_stream_key()
    hash(a.shared_stream_key())


# ---------------------------------------------------------------------------------------- run() alone


def test_run_alone_still_works(sandbox: SandboxServer, conn_id: str) -> None:
    """``dag.test()`` runs the trigger inline through ``run()``: a private poll on 3.3, a group of one before."""

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        waiting = asyncio.create_task(run_alone(make_trigger(conn_id, 30, poll_interval=INTERVAL)))
        await until(lambda: balance_requests(sandbox) >= 2, what="two polls")
        assert not waiting.done()
        sandbox.top_up(30)
        fired = await asyncio.wait_for(waiting, 30)
        at_once = await asyncio.wait_for(run_alone(make_trigger(conn_id, 0, poll_interval=3600)), 30)
        timed_out = await asyncio.wait_for(
            run_alone(make_trigger(conn_id, 999, poll_interval=3600, end_at=time.time() + 0.2)), 30
        )
        return fired, at_once, timed_out

    fired, at_once, timed_out = asyncio.run(scenario())
    assert [e["status"] for e in fired] == ["success"]
    assert fired[0]["balance"]["available_credits"] == 30
    assert [e["status"] for e in at_once] == ["success"]
    assert [e["status"] for e in timed_out] == ["timeout"]


def test_run_alone_after_serialization_round_trip(sandbox: SandboxServer, conn_id: str) -> None:
    """The triggerer rebuilds the trigger from ``serialize()``; no secret is in what is stored."""
    classpath, kwargs = make_trigger(conn_id, 0, poll_interval=INTERVAL, end_at=time.time() + 60).serialize()
    assert classpath == credits.CLASSPATH
    assert sandbox.api_key not in repr(kwargs)
    rebuilt = credits.CreditsTrigger(**kwargs)
    events = asyncio.run(asyncio.wait_for(run_alone(rebuilt), 30))
    assert [e["status"] for e in events] == ["success"]


# ------------------------------------------------------------------------------------ the event loop


def test_200_triggers_subscribing_and_firing_in_waves_share_one_poll(
    sandbox: SandboxServer, conn_id: str, triggerer: Triggerer
) -> None:
    """200 triggers started one per turn of the loop (as the triggerer starts them), half firing on one
    poll, the rest on a later one: every one fires success, with one request per interval for all.

    The event-loop lag of this (and of 1,000 triggers) is a figure, measured by bench/many_triggers.py
    and quoted in the README's performance table; a test on a shared machine cannot bound it reliably.
    """

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = []
        for cost in range(1, 201):
            tasks.append(triggerer.start(make_trigger(conn_id, cost, poll_interval=INTERVAL)))
            await asyncio.sleep(0)
        try:
            start = balance_requests(sandbox)
            await until(lambda: balance_requests(sandbox) >= start + 4, what="four polls")
            sandbox.top_up(100)
            await until(lambda: sum(task.done() for task in tasks) == 100, what="half of the triggers")
            sandbox.top_up(100)
            await until(lambda: all(task.done() for task in tasks), what="every trigger")
            assert all(task.result()[0]["status"] == "success" for task in tasks)
        finally:
            await triggerer.stop(tasks)
        return loop.time() - started

    elapsed = asyncio.run(scenario())
    polls = balance_requests(sandbox)
    assert polls <= elapsed / INTERVAL + 2, (polls, elapsed)  # one request per interval, not one per trigger


def test_the_in_process_fan_out_wakes_one_batch_per_loop_turn() -> None:
    """Airflow < 3.3: a poll result reaches 1,000 waiters in batches, with other tasks running in between.

    Woken all at once, 1,000 triggers would fire (filter, event, log lines) in one turn of the loop
    and stall every other trigger of the triggerer. Subscribers that leave during the fan-out are
    skipped, and every one still there gets the item.
    """
    batch = _poll._FAN_OUT_BATCH
    group = object.__new__(_poll._PollGroup)  # no poll task: _offer is driven directly
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize=1) for _ in range(10 * batch)]
    group.queues = set(queues)
    leaving: set[asyncio.Queue[Any]] = set()
    seen_between: list[int] = []

    async def other_task() -> None:
        while True:
            delivered = sum(1 for q in queues if q.full())
            seen_between.append(delivered)
            if delivered and not leaving:  # the fan-out has started: a batch not reached yet leaves
                leaving.update([q for q in queues if not q.full()][:batch])
                group.queues -= leaving
            await asyncio.sleep(0)

    async def main() -> None:
        probe = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        await group._offer("balance")
        probe.cancel()

    asyncio.run(main())
    partial = [n for n in seen_between if 0 < n < len(queues) - len(leaving)]
    assert partial, f"the other task never ran during the fan-out: {seen_between}"
    assert len(leaving) == batch
    assert max(b - a for a, b in itertools.pairwise(seen_between)) <= batch
    assert all(q.get_nowait() == "balance" for q in queues if q not in leaving)
    assert not any(q.full() for q in leaving)


@pytest.mark.parametrize("poll_interval", [0.05, 1.0, 60.0, 300.0])
def test_firing_triggers_spread_their_work_over_a_bounded_window(poll_interval: float) -> None:
    """1,000 triggers that fire on one poll do not all run in one turn of the loop, and none waits
    longer than min(MAX_SPREAD, poll_interval / 2) before firing (before the next poll arrives)."""
    window = min(credits.CreditsTrigger.MAX_SPREAD, poll_interval / 2)
    triggers = [make_trigger(CONN_ID, 100 + i, poll_interval=poll_interval) for i in range(1000)]
    delays = [t.spread for t in triggers]
    assert all(0 <= d < window for d in delays)
    assert len(set(delays)) >= 400  # spread over many distinct moments
    assert max(delays) > 0.8 * window
    assert credits.CreditsTrigger.MAX_SPREAD == 1.0
