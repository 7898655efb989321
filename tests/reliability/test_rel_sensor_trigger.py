"""Promise 6: the sensor and the trigger ride out bursts of API failures; the operator says what to do.

The trigger is driven directly with asyncio against the real sandbox: a burst of 503s, timeouts,
rate limits and an outage (connection refused) comes first, and the trigger keeps polling until
the balance is read; ``time.sleep`` is made to explode meanwhile, so every wait (poll interval and
the hook's own retries) is proven to be an ``asyncio.sleep``. Permanent errors end it at once.
The sensor's ``poke`` does the same on a worker. The operator's error for each failure names
the fix.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from loopback_support import ConnSetter, RawFactory, answer_every_request, closed_port, response_bytes
from reliability_support import self_signed_server_context

from airflow_provider_localleads.exceptions import (
    InsufficientCreditsError,
    LocalLeadsAuthenticationError,
    LocalLeadsError,
)
from airflow_provider_localleads.operators.credits import CheckCreditsOperator
from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer
from airflow_provider_localleads.sensors.credits import CreditsSensor
from airflow_provider_localleads.triggers.credits import CreditsTrigger

CONN = "rel_trigger"


@pytest.fixture
def no_blocking_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any ``time.sleep`` in this thread (the event loop's) fails the test: the trigger must not block."""
    main = threading.get_ident()
    real = time.sleep

    def guarded(seconds: float) -> None:
        if threading.get_ident() == main:
            raise AssertionError(f"time.sleep({seconds}) called on the event loop's thread")
        real(seconds)

    monkeypatch.setattr(time, "sleep", guarded)


def first_event(trigger: CreditsTrigger, timeout: float = 20.0) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        events = trigger.run()
        try:
            event = await asyncio.wait_for(anext(events), timeout)
        finally:
            await events.aclose()
        return dict(event.payload)

    return asyncio.run(run())


def make_trigger(cost: int = 50, end_in: float = 30.0) -> CreditsTrigger:
    return CreditsTrigger(estimated_cost=cost, localleads_conn_id=CONN, poll_interval=0.05, end_at=time.time() + end_in)


@pytest.fixture
def sandbox_conn(localleads_sandbox: SandboxServer, set_conn: ConnSetter) -> SandboxServer:
    set_conn(CONN, host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=0, timeout=0.3)
    return localleads_sandbox


def test_trigger_survives_a_burst_of_503s_timeouts_and_rate_limits(
    sandbox_conn: SandboxServer, no_blocking_sleep: None
) -> None:
    sandbox_conn.fail_next(503, times=4)
    sandbox_conn.fail_next(502, body="<html>Bad gateway</html>", content_type="text/html")
    sandbox_conn.slow_next(1.0, times=2)  # 0.3 s timeout: two timed-out polls
    sandbox_conn.rate_limit_next(retry_after="0")
    started = time.monotonic()
    event = first_event(make_trigger())
    assert event["status"] == "success"
    assert event["balance"]["available_credits"] == 82
    assert sandbox_conn.pending_faults() == []  # every failure was met, then the good answer
    # Timed-out polls end at the 0.3 s read timeout, not the 1 s answer: the whole burst needs about 1 s;
    # 6 s is over five times that, for a loaded machine.
    assert time.monotonic() - started < 6


def test_trigger_rides_out_an_outage(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, no_blocking_sleep: None
) -> None:
    set_conn(CONN, host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=0, timeout=0.3)
    localleads_sandbox.stop()  # connection refused until it comes back on the same port
    restart = threading.Timer(0.8, localleads_sandbox.start)
    restart.start()
    try:
        event = first_event(make_trigger())
    finally:
        restart.join()
    assert event["status"] == "success"
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_the_hooks_retries_inside_the_trigger_sleep_with_asyncio(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, no_blocking_sleep: None
) -> None:
    set_conn(CONN, host=localleads_sandbox.url, password=localleads_sandbox.api_key, max_retries=2)
    localleads_sandbox.fail_next(503, times=2)  # one poll: two retries (real backoff), then the balance
    event = first_event(make_trigger())
    assert event["status"] == "success"
    assert localleads_sandbox.request_count(BALANCE_PATH) == 3


def test_trigger_keeps_waiting_for_credits_through_errors(sandbox_conn: SandboxServer, no_blocking_sleep: None) -> None:
    sandbox_conn.set_balance(used=120)  # 5 available
    sandbox_conn.fail_next(503, times=3)

    def top_up_later() -> None:
        while sandbox_conn.request_count(BALANCE_PATH) < 6:
            time.sleep(0.01)
        sandbox_conn.top_up(100)

    helper = threading.Thread(target=top_up_later)
    helper.start()
    event = first_event(make_trigger(cost=50))
    helper.join(10)
    assert event["status"] == "success"
    assert event["balance"]["available_credits"] == 105


def test_trigger_stops_at_once_on_a_wrong_key(
    localleads_sandbox: SandboxServer, set_conn: ConnSetter, no_blocking_sleep: None
) -> None:
    set_conn(CONN, host=localleads_sandbox.url, password="wrong-key", max_retries=3)
    event = first_event(make_trigger())
    assert event["status"] == "error"
    assert event["error_type"] == "LocalLeadsAuthenticationError"
    assert event["transient"] is False
    assert "API key" in event["message"]
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


def test_trigger_times_out_if_the_api_never_recovers(sandbox_conn: SandboxServer, no_blocking_sleep: None) -> None:
    sandbox_conn.fail_next(503, times=None)
    event = first_event(make_trigger(end_in=0.6))
    assert event["status"] == "timeout"
    assert "no balance could be read" in event["message"]
    assert sandbox_conn.request_count(BALANCE_PATH) >= 3


# ------------------------------------------------------------------------------------------- sensor


@pytest.fixture
def sensor() -> CreditsSensor:
    return CreditsSensor(
        task_id="wait_for_credits", estimated_cost=50, localleads_conn_id=CONN, deferrable=False, poke_interval=1
    )


def test_sensor_pokes_through_a_burst_of_failures(sandbox_conn: SandboxServer, sensor: CreditsSensor) -> None:
    sandbox_conn.fail_next(503, times=2)
    sandbox_conn.slow_next(1.0)
    sandbox_conn.rate_limit_next(retry_after="3600")
    results = [sensor.poke({}) for _ in range(5)]
    assert [r.is_done for r in results] == [False, False, False, False, True]
    assert results[-1].xcom_value["available_credits"] == 82


def test_sensor_pokes_through_an_outage(localleads_sandbox: SandboxServer, set_conn: ConnSetter) -> None:
    set_conn(CONN, host=f"http://127.0.0.1:{closed_port()}", password="k", max_retries=0)
    sensor = CreditsSensor(task_id="wait", estimated_cost=1, localleads_conn_id=CONN, deferrable=False)
    assert sensor.poke({}).is_done is False


def test_sensor_fails_at_once_on_a_wrong_key(localleads_sandbox: SandboxServer, set_conn: ConnSetter) -> None:
    set_conn(CONN, host=localleads_sandbox.url, password="wrong-key", max_retries=3)
    sensor = CreditsSensor(task_id="wait", estimated_cost=1, localleads_conn_id=CONN, deferrable=False)
    with pytest.raises(LocalLeadsAuthenticationError):
        sensor.poke({})
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1


# ------------------------------------------------------------------------------------------- operator


@pytest.fixture
def operator() -> CheckCreditsOperator:
    return CheckCreditsOperator(task_id="check_credits", estimated_cost=50, localleads_conn_id=CONN)


def _html_server(raw_server: RawFactory) -> str:
    return raw_server(answer_every_request(response_bytes(body=b"<html>Login</html>", content_type="text/html"))).url


def _tls_server(raw_server: RawFactory) -> str:
    return raw_server(answer_every_request(response_bytes()), tls=self_signed_server_context()).url


def _never_answers(raw_server: RawFactory) -> str:
    return raw_server(lambda conn, server: (server.read_request(conn), server.stopping.wait())).url


@pytest.fixture
def broken(
    request: pytest.FixtureRequest, raw_server: RawFactory, localleads_sandbox: SandboxServer, set_conn: ConnSetter
) -> str:
    """Point the connection at one failure; returns its name."""
    name = request.param
    key = localleads_sandbox.api_key
    host = localleads_sandbox.url
    extra: dict[str, Any] = {"max_retries": 0, "timeout": 0.3}
    if name == "wrong-key":
        key = "wrong-key"
    elif name == "server-error":
        localleads_sandbox.fail_next(503, times=None)
    elif name == "rate-limited-long":
        localleads_sandbox.rate_limit_next(retry_after="3600", times=None)
    elif name == "refused":
        host = f"http://127.0.0.1:{closed_port()}"
    elif name == "timeout":
        host = _never_answers(raw_server)
    elif name == "html":
        host = _html_server(raw_server)
    elif name == "tls":
        host = _tls_server(raw_server)
    elif name == "insufficient":
        localleads_sandbox.set_balance(used=120)
    elif name == "unknown-extra":
        extra["max_retry"] = 1
    set_conn(CONN, host=host, password=key, **extra)
    return name


ADVICE = {
    "wrong-key": (LocalLeadsAuthenticationError, "Check the API key in the connection's password field", True),
    "server-error": (LocalLeadsError, "retry later; if it persists, check the provider's status page", False),
    "rate-limited-long": (LocalLeadsError, "Retry later or reduce how often tasks using this key call the API", False),
    "refused": (LocalLeadsError, "check the connection's host and that this worker can reach it", False),
    "timeout": (LocalLeadsError, "may be overloaded or unreachable from this worker", False),
    "html": (LocalLeadsError, "check the connection's host", False),
    "tls": (LocalLeadsError, "check the host name and the certificate", False),
    "insufficient": (InsufficientCreditsError, "Top up, lower estimated_cost, wait for the reset", True),
    "unknown-extra": (LocalLeadsError, "the extras this connection understands are", False),
}


@pytest.mark.parametrize("broken", list(ADVICE), indirect=True)
def test_operator_errors_say_what_to_do_next(operator: CheckCreditsOperator, broken: str) -> None:
    error_class, advice, no_retry = ADVICE[broken]
    with pytest.raises(error_class) as info:
        operator.execute({})
    assert advice in str(info.value)
    # Retrying the task cannot fix a wrong key or a short balance: those fail without retries.
    assert isinstance(info.value, AirflowFailException) is no_retry
