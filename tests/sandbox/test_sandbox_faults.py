"""Faults (``sandbox/faults.py``): every kind's answer on the wire, the queue's order, slow answers."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from sandbox_support import AUTH, get

from airflow_provider_localleads.sandbox import BALANCE_PATH, MALFORMED_KINDS, TRANSACTIONS_PATH, Fault, SandboxServer
from airflow_provider_localleads.sandbox.faults import ERROR_KINDS, render_fault


def test_fail_next_answers_503_once_then_recovers(localleads_sandbox, http_session):
    localleads_sandbox.fail_next()
    first = get(http_session, localleads_sandbox, BALANCE_PATH)
    second = get(http_session, localleads_sandbox, BALANCE_PATH)

    assert first.status_code == 503
    assert first.json() == {"success": False, "error": "Service Unavailable"}
    assert "Retry-After" not in first.headers
    assert second.status_code == 200


def test_fail_next_with_a_proxy_html_page(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(status=502, body="<html>Bad gateway</html>", content_type="text/html")
    response = get(http_session, localleads_sandbox, TRANSACTIONS_PATH)
    assert response.status_code == 502
    assert response.text == "<html>Bad gateway</html>"
    assert response.headers["Content-Type"] == "text/html"
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_fail_next_with_retry_after_and_bytes_body(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(500, retry_after="7", body=b'{"success":false,"error":"boom"}')
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert response.status_code == 500
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"] == "boom"


@pytest.mark.parametrize("retry_after", ["1", "0", "120", "Wed, 21 Oct 2026 07:28:00 GMT", "soon", "-3", ""])
def test_rate_limit_sends_retry_after_verbatim(localleads_sandbox, http_session, retry_after):
    localleads_sandbox.rate_limit_next(retry_after=retry_after)
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == retry_after
    assert response.json()["error"]["code"] == "RATE_LIMITED"


def test_rate_limit_without_retry_after(localleads_sandbox, http_session):
    localleads_sandbox.rate_limit_next(retry_after=None)
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_times_and_fifo_order(localleads_sandbox, http_session):
    localleads_sandbox.rate_limit_next(times=2)
    localleads_sandbox.fail_next(500)
    statuses = [get(http_session, localleads_sandbox, BALANCE_PATH).status_code for _ in range(5)]
    assert statuses == [429, 429, 500, 200, 200]


def test_unlimited_fault_lasts_until_cleared(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(503, times=None)
    assert [get(http_session, localleads_sandbox, BALANCE_PATH).status_code for _ in range(4)] == [503] * 4
    assert localleads_sandbox.pending_faults()[0]["times"] is None
    assert localleads_sandbox.clear_faults() == 1
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200


def test_a_path_limited_fault_waits_for_its_path(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(500, path=TRANSACTIONS_PATH)
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert get(http_session, localleads_sandbox, TRANSACTIONS_PATH).status_code == 500
    assert get(http_session, localleads_sandbox, TRANSACTIONS_PATH).status_code == 200


def test_a_later_matching_fault_is_taken_before_an_earlier_non_matching_one(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(500, path=TRANSACTIONS_PATH)
    localleads_sandbox.fail_next(502)
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 502
    assert get(http_session, localleads_sandbox, TRANSACTIONS_PATH).status_code == 500


def test_faults_come_before_auth_like_a_gateway(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(503)
    response = get(http_session, localleads_sandbox, BALANCE_PATH, auth=False)
    assert response.status_code == 503
    record = localleads_sandbox.requests[-1]
    assert (record.auth_valid, record.status, record.fault) == (False, 503, "error")


def test_faults_never_touch_admin_paths(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(503, times=None)
    localleads_sandbox.slow_next(5)
    started = time.monotonic()
    response = http_session.get(localleads_sandbox.url + "/_sandbox/state", timeout=5)
    assert response.status_code == 200
    # A slow fault would hold this answer 5 s; an admin request takes milliseconds (2 s: slack for load).
    assert time.monotonic() - started < 2
    assert len(response.json()["data"]["faults"]) == 2


@pytest.mark.parametrize("path", [BALANCE_PATH, TRANSACTIONS_PATH])
@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_every_malformed_kind(localleads_sandbox, http_session, kind, path):
    localleads_sandbox.state.clear_faults()
    good = get(http_session, localleads_sandbox, path, limit=2)
    localleads_sandbox.malformed_next(kind)
    response = get(http_session, localleads_sandbox, path, limit=2)

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    content = response.content
    if kind == "html":
        assert response.headers["Content-Type"].startswith("text/html")
        assert content.lstrip().lower().startswith(b"<!doctype html>")
        return
    assert response.headers["Content-Type"] == "application/json"
    if kind == "empty":
        assert content == b""
    elif kind == "not_json":
        assert content == b"oops"
    elif kind == "truncated":
        assert content == good.content[: len(good.content) // 2]
        with pytest.raises(ValueError):
            json.loads(content)
    elif kind == "array":
        assert json.loads(content) == [good.json()]
    elif kind == "success_false_string":
        body = json.loads(content)
        assert body["success"] is False
        assert isinstance(body["error"], str)
    elif kind == "success_false_object":
        body = json.loads(content)
        assert body["success"] is False
        assert set(body["error"]) == {"code", "message"}
    elif kind == "missing_field":
        body = json.loads(content)
        if path == BALANCE_PATH:
            assert "availableCredits" not in body["data"]
            assert "usedCredits" in body["data"]
        else:
            assert "total" not in body["meta"]
            assert body["data"] == good.json()["data"]
    elif kind == "mistyped_field":
        body = json.loads(content)
        if path == BALANCE_PATH:
            assert body["data"]["availableCredits"] == "82"
        else:
            assert body["meta"]["total"] == str(good.json()["meta"]["total"])
    else:  # pragma: no cover
        pytest.fail(f"untested kind {kind}")
    # and the fault was used up
    assert get(http_session, localleads_sandbox, path, limit=2).content == good.content


def test_slow_next_delays_then_answers_normally(localleads_sandbox, http_session):
    localleads_sandbox.slow_next(0.6)
    started = time.monotonic()
    response = get(http_session, localleads_sandbox, BALANCE_PATH)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.55
    assert localleads_sandbox.requests[-1].fault == "slow"


def test_slow_next_trips_a_client_timeout_without_server_tracebacks(localleads_sandbox, http_session, capfd):
    localleads_sandbox.slow_next(0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http_session.get(localleads_sandbox.url + BALANCE_PATH, headers=AUTH, timeout=0.2)
    time.sleep(0.6)  # let the server try to answer the departed client
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_slow_error_is_a_gateway_timeout(localleads_sandbox, http_session):
    localleads_sandbox.fail_next(504, delay_seconds=0.3)
    started = time.monotonic()
    assert get(http_session, localleads_sandbox, BALANCE_PATH).status_code == 504
    assert time.monotonic() - started >= 0.25


def test_stop_is_prompt_while_a_slow_fault_sleeps():
    sandbox = SandboxServer().start()
    sandbox.slow_next(30)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(requests.get(sandbox.url + BALANCE_PATH, headers=AUTH, timeout=20))
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while sandbox.pending_faults() and time.monotonic() < deadline:  # the request has taken the fault
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    sandbox.stop()
    stopped_in = time.monotonic() - started
    thread.join(5)

    # The slow fault sleeps 30 s; stop() wakes it at once (2 s: slack for a loaded machine).
    assert stopped_in < 2.0
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)


# Without HTTP: the rendering and the admin JSON form of a fault.


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS | ERROR_KINDS))
def test_render_fault_reads_the_success_body_only_for_the_kinds_that_distort_it(kind):
    calls: list[int] = []

    def success() -> dict[str, Any]:
        calls.append(1)
        return {"success": True, "data": {"availableCredits": 82}}

    answer = render_fault(Fault(kind), success)
    assert bool(calls) == (kind in {"truncated", "array", "missing_field", "mistyped_field"})
    assert answer.status == {"rate_limit": 429, "error": 503}.get(kind, 200)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"status": 429}, Fault("rate_limit", retry_after="1")),
        ({"status": 429, "retry_after": None}, Fault("rate_limit")),
        ({"status": 500}, Fault("error", status=500)),
        ({"delay": 0.5}, Fault("slow", delay_seconds=0.5)),
        ({"kind": "html", "path": BALANCE_PATH}, Fault("html", path=BALANCE_PATH)),
    ],
)
def test_fault_from_json_infers_the_kind(data, expected):
    assert Fault.from_json(data) == expected


def test_a_fault_survives_its_admin_json():
    fault = Fault("error", status=502, retry_after="2", body="<p>x</p>", content_type="text/html", path=BALANCE_PATH)
    assert Fault.from_json(fault.to_json()) == fault
