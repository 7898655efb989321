"""CreditsTrigger, branch by branch, on its own event loop (no triggerer, no DAG run).

``run()`` and ``open_shared_stream`` against the real sandbox; ``filter_shared_stream`` (where every
decision is made) over hand-made streams of raw events, so each branch is reached on purpose and
in milliseconds. Many triggers sharing one poll: tests/sharing. Lag of a busy loop: bench/.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from log_capture import captured_task_logs

from airflow_provider_localleads.exceptions import (
    LocalLeadsAuthenticationError,
    LocalLeadsConfigurationError,
    LocalLeadsConnectionError,
    LocalLeadsRateLimitError,
    LocalLeadsResponseError,
    LocalLeadsServerError,
    LocalLeadsTLSError,
)
from airflow_provider_localleads.models import CreditBalance
from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer
from airflow_provider_localleads.triggers import poll
from airflow_provider_localleads.triggers.credits import CreditsTrigger

pytestmark = pytest.mark.timeout(60)

CONN_ENV = "AIRFLOW_CONN_LOCALLEADS_DEFAULT"
#: Short enough that a trigger's spread (at most half the interval) costs nothing here.
FAST = 0.02


def balance(available: int) -> CreditBalance:
    monthly, bonus = 100, max(25, available)
    return CreditBalance.from_api(
        {
            "monthlyCredits": monthly,
            "bonusCredits": bonus,
            "usedCredits": monthly + bonus - available,
            "availableCredits": available,
            "resetDay": 1,
            "lastResetAt": "2026-05-01T00:00:00.000Z",
        }
    )


class Raise:
    """In a :class:`Stream`: the poll itself raises ``error`` (API errors are yielded, not raised)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Stream:
    """A hand-made shared stream: yields ``items`` (raising where an item is a :class:`Raise`), then
    ``end``: ``"stop"`` (the generator returns) or ``"hang"`` (never yields again). Counts reads."""

    def __init__(self, items: Iterable[Any] = (), end: str = "stop") -> None:
        self.items = list(items)
        self.end = end
        self.reads = 0

    async def __aiter__(self) -> AsyncIterator[Any]:
        for item in self.items:
            self.reads += 1
            if isinstance(item, Raise):
                raise item.error
            yield item
        if self.end == "hang":
            await asyncio.Event().wait()


def events_of(trigger: CreditsTrigger, stream: Stream) -> list[dict[str, Any]]:
    """Every event ``filter_shared_stream`` yields over ``stream`` (it must end by itself)."""

    async def main() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.filter_shared_stream(aiter(stream))]

    return asyncio.run(main())


def trigger(cost: int = 50, *, end_in: float | None = 30.0, **kwargs: Any) -> CreditsTrigger:
    end_at = None if end_in is None else time.time() + end_in
    return CreditsTrigger(estimated_cost=cost, poll_interval=FAST, end_at=end_at, **kwargs)


async def first_event(trig: CreditsTrigger) -> dict[str, Any]:
    events = trig.run()
    try:
        return dict((await anext(events)).payload)
    finally:
        await events.aclose()


@pytest.fixture
def sandbox(localleads_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The sandbox as ``localleads_default``, without hook retries: one failed request is one failed poll."""
    monkeypatch.setenv(CONN_ENV, localleads_sandbox.connection_json(extra={"max_retries": 0}))
    return localleads_sandbox


# ---------------------------------------------------------------------------------- serialization


@pytest.mark.parametrize("end_at", [1_900_000_000.5, None])
def test_serialize_round_trip_holds_no_secret(sandbox, end_at):
    original = CreditsTrigger(estimated_cost="70", localleads_conn_id="llc", poll_interval=30, end_at=end_at)

    classpath, kwargs = original.serialize()
    stored = json.loads(json.dumps(kwargs))  # what the metadata database keeps
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**stored)

    assert kwargs == {"estimated_cost": 70, "localleads_conn_id": "llc", "poll_interval": 30.0, "end_at": end_at}
    assert stored == kwargs
    assert type(rebuilt) is CreditsTrigger
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.shared_stream_key() == original.shared_stream_key()
    assert sandbox.api_key not in json.dumps(kwargs) + repr(original) + repr(rebuilt)
    assert sandbox.request_count() == 0


def test_shared_stream_key_is_the_connection_and_interval_only():
    def key(cost: int = 1, conn_id: str = "a", interval: float = 60, end_at: float | None = None) -> Any:
        trig = CreditsTrigger(estimated_cost=cost, localleads_conn_id=conn_id, poll_interval=interval, end_at=end_at)
        return trig.shared_stream_key()

    assert hash(key()) == hash(key(cost=999, interval=60.0, end_at=1.0))
    assert key() == key(cost=999, interval=60.0, end_at=1.0)
    assert key() != key(conn_id="b")
    assert key() != key(interval=61)


# --------------------------------------------------------------------------- run(), against the sandbox


def test_run_fires_success_when_credits_arrive_between_polls(sandbox):
    sandbox.set_balance(monthly=100, bonus=25, used=120)  # 5 available

    async def main() -> dict[str, Any]:
        waiting = asyncio.create_task(first_event(trigger(50)))
        while sandbox.request_count(BALANCE_PATH) < 2:  # two polls saw 5 credits
            await asyncio.sleep(0.005)
        assert not waiting.done()
        sandbox.top_up(100)
        return await waiting

    payload = asyncio.run(main())

    now = CreditBalance.from_api(sandbox.balance())
    assert payload == {
        "status": "success",
        "balance": now.to_dict(),
        "estimated_cost": 50,
        "message": f"Enough LocalLeads credits: needs 50, {now.summary()}",  # the line every check logs
    }
    assert payload["balance"]["available_credits"] == 105
    assert sandbox.request_count(BALANCE_PATH) >= 3


def test_run_fires_an_error_event_on_a_wrong_key(sandbox, monkeypatch):
    conn = json.loads(sandbox.connection_json(extra={"max_retries": 3}))
    monkeypatch.setenv(CONN_ENV, json.dumps({**conn, "password": "wrong-key-trigger-unit"}))

    payload = asyncio.run(first_event(trigger(50)))

    assert payload["status"] == "error"
    assert (payload["error_type"], payload["transient"], payload["estimated_cost"]) == (
        "LocalLeadsAuthenticationError",
        False,
        50,
    )
    assert "HTTP 401" in payload["message"]
    assert "wrong-key-trigger-unit" not in json.dumps(payload)
    assert sandbox.request_count(BALANCE_PATH) == 1  # a 401 is not retried


def test_run_fires_timeout_at_end_at_with_the_last_balance(sandbox):
    sandbox.set_balance(used=120)  # 5 available, never enough
    trig = trigger(50, end_in=0.3)

    payload = asyncio.run(first_event(trig))

    assert time.time() >= trig.end_at
    assert payload["status"] == "timeout"
    assert payload["balance"]["available_credits"] == 5
    assert payload["estimated_cost"] == 50
    assert "Timed out waiting for 50 LocalLeads credits (last seen: 5 available" in payload["message"]
    assert sandbox.request_count(BALANCE_PATH) >= 2


def test_run_keeps_polling_through_transient_errors(sandbox, capfd):
    sandbox.fail_next(503)
    sandbox.rate_limit_next(retry_after="0")

    with captured_task_logs(capfd) as log:
        payload = asyncio.run(first_event(trigger(50)))

    assert payload["status"] == "success"
    assert [r.status for r in sandbox.requests] == [503, 429, 200]
    assert "balance check failed, will retry" in log()


def test_open_shared_stream_yields_api_errors_instead_of_raising(sandbox):
    sandbox.fail_next(503)

    async def main() -> list[Any]:
        stream = CreditsTrigger.open_shared_stream({"localleads_conn_id": "localleads_default", "poll_interval": FAST})
        try:
            return [await anext(stream), await anext(stream)]
        finally:
            await stream.aclose()

    first, second = asyncio.run(main())

    assert isinstance(first, LocalLeadsServerError)
    assert first.transient
    assert isinstance(second, CreditBalance)
    assert second.available_credits == 82


# ------------------------------------------------------------------ filter_shared_stream, by hand


def test_filter_fires_success_on_the_first_balance_that_is_enough():
    stream = Stream([balance(10), balance(49), balance(50), balance(500)])

    assert events_of(trigger(50), stream) == [
        {
            "status": "success",
            "balance": balance(50).to_dict(),
            "estimated_cost": 50,
            "message": f"Enough LocalLeads credits: needs 50, {balance(50).summary()}",
        }
    ]
    assert stream.reads == 3  # nothing read after it fired


def test_filter_waits_through_transient_errors():
    transient = [LocalLeadsServerError("s"), LocalLeadsRateLimitError("r"), LocalLeadsConnectionError("c")]
    stream = Stream([balance(5), *transient, balance(60)])

    [event] = events_of(trigger(50), stream)

    assert event["status"] == "success"
    assert event["balance"]["available_credits"] == 60


@pytest.mark.parametrize(
    "error",
    [
        LocalLeadsAuthenticationError("key refused", status_code=401, path=BALANCE_PATH),
        LocalLeadsResponseError("not JSON"),
        LocalLeadsTLSError("bad certificate"),  # a connection error, but not a transient one
        LocalLeadsConfigurationError("no API key"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_filter_ends_on_a_permanent_error(error):
    stream = Stream([balance(5), error, balance(500)])

    assert events_of(trigger(50), stream) == [
        {
            "status": "error",
            "error_type": type(error).__name__,
            "message": str(error),
            "transient": False,
            "estimated_cost": 50,
        }
    ]
    assert stream.reads == 2


@pytest.mark.parametrize("raw", [42, {"availableCredits": 500}, None], ids=repr)
def test_filter_fails_closed_on_a_raw_event_it_does_not_know(raw):
    [event] = events_of(trigger(0), Stream([raw]))
    assert event["status"] == "error"
    assert event["error_type"] == "LocalLeadsError"
    assert event["message"] == f"Unexpected raw event {type(raw).__name__}"


def test_filter_reports_a_stream_that_ends():
    [event] = events_of(trigger(50), Stream([balance(5)]))
    assert (event["status"], event["error_type"], event["transient"]) == ("error", "LocalLeadsError", True)
    assert event["message"] == "The LocalLeads balance poll ended unexpectedly"


@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        (LocalLeadsConfigurationError("no such connection"), "LocalLeadsConfigurationError"),
        (RuntimeError("poll crashed"), "RuntimeError"),
        (TimeoutError("not the deadline"), "TimeoutError"),  # raised by the poll, not by end_at
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_filter_reports_a_poll_that_dies(error, error_type):
    """The shared poll raised (it reaches every subscriber): one error event naming what it was."""
    [event] = events_of(trigger(50), Stream([balance(5), Raise(error)]))
    assert (event["status"], event["error_type"], event["transient"]) == ("error", error_type, False)
    assert event["message"] == f"The LocalLeads balance poll failed: {error}"


def test_filter_end_at_already_due_reads_nothing():
    stream = Stream([balance(500)])
    [event] = events_of(trigger(50, end_in=-1), stream)
    assert event["status"] == "timeout"
    assert event["balance"] is None
    assert "no balance could be read" in event["message"]
    assert stream.reads == 0


@pytest.mark.parametrize(
    ("items", "last"), [([], None), ([balance(5), LocalLeadsServerError("s")], 5)], ids=["quiet", "short"]
)
def test_filter_times_out_while_the_stream_is_quiet(items, last):
    trig = trigger(50, end_in=0.2)

    [event] = events_of(trig, Stream(items, end="hang"))

    assert time.time() >= trig.end_at
    assert event["status"] == "timeout"
    if last is None:
        assert event["balance"] is None
    else:
        assert event["balance"]["available_credits"] == last
        assert "last seen: 5 available" in event["message"]


class RecordingLog:
    """Stands in for the trigger's logger: what it logged, formatted (independent of log capture)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _record(self, msg: str, *args: object, **kwargs: object) -> None:
        self.lines.append(msg % args if args else msg)

    info = warning = error = debug = _record

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


def test_filter_logs_a_state_once_until_it_changes(monkeypatch):
    log = RecordingLog()
    monkeypatch.setattr(CreditsTrigger, "log", property(lambda self: log))
    items = [balance(5)] * 3 + [balance(7)] * 2 + [LocalLeadsServerError("down")] * 3 + [balance(50)]
    events_of(trigger(50), Stream(items))
    assert log.count("Enough LocalLeads credits: needs 50, 50 available") == 1
    assert log.count("Waiting for LocalLeads credits: needs 50, 5 available") == 1
    assert log.count("Waiting for LocalLeads credits: needs 50, 7 available") == 1
    assert log.count("balance check failed, will retry") == 1

    monkeypatch.setattr(CreditsTrigger, "REPEAT_LOG_AFTER", 0.0)  # an unchanged state is repeated after a while
    log.lines.clear()
    events_of(trigger(50), Stream([balance(5)] * 3 + [balance(50)]))
    assert log.count("Enough LocalLeads credits: needs 50, 50 available") == 1
    assert log.count("Waiting for LocalLeads credits: needs 50, 5 available") == 3


# ---------------------------------------------------------------- the first poll's imports (8d)

_FIRST_POLL_SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.abc, importlib.machinery, json, sys, threading, time

    WATCHED = set(sys.argv[1:])
    executed = {}  # module -> (name of the thread that ran its code, whether an event loop ran there)

    def loop_running():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in WATCHED or name in executed:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                executed[name] = (threading.current_thread().name, loop_running())
                run(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Recorder())
    import airflow.triggers.base  # what a triggerer has loaded before it loads a trigger class

    before = set(sys.modules)
    from airflow_provider_localleads.triggers.credits import CreditsTrigger

    loaded_by_class = sorted(m for m in WATCHED if m in sys.modules and m not in before)

    async def main():
        trigger = CreditsTrigger(estimated_cost=0, poll_interval=0.05, end_at=time.time() + 30)
        events = trigger.run()
        try:
            return (await anext(events)).payload["status"]
        finally:
            await events.aclose()

    status = asyncio.run(main())
    print("RESULT " + json.dumps({
        "preloaded": sorted(m for m in WATCHED if m in before),
        "loaded_by_class": loaded_by_class,
        "executed": executed,
        "status": status,
    }))
    """
)


def test_the_first_poll_imports_the_hook_module_off_the_event_loop(sandbox):
    """In a fresh interpreter (as a triggerer starts): importing the trigger class loads none of the
    first poll's heavy modules, and the first poll imports each of them in a thread, never on the loop."""
    watched = [*poll.FIRST_POLL_IMPORTS, "requests", "urllib3"]
    env = {**os.environ, CONN_ENV: sandbox.connection_json()}

    out = subprocess.run(
        [sys.executable, "-c", _FIRST_POLL_SCRIPT, *watched],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["status"] == "success"
    assert sandbox.request_count(BALANCE_PATH) == 1
    assert result["loaded_by_class"] == []  # the trigger module's own imports stay light
    first_poll = {m: where for m, where in result["executed"].items() if m not in result["preloaded"]}
    assert poll.HOOK_MODULE in first_poll
    assert {m: where for m, where in first_poll.items() if where[1] or where[0] == "MainThread"} == {}
    assert set(first_poll) >= {poll.HOOK_MODULE} | {"requests", "urllib3"} - set(result["preloaded"])
