"""The request log (``sandbox/requestlog.py``): what tests assert on, never the key, exact counts."""

from __future__ import annotations

import json

from sandbox_support import get

from airflow_provider_localleads.sandbox import BALANCE_PATH, TRANSACTIONS_PATH, SandboxServer, SandboxState


def test_request_log_records_what_tests_assert_on_and_never_the_key(localleads_sandbox, http_session):
    get(http_session, localleads_sandbox, BALANCE_PATH)
    get(http_session, localleads_sandbox, TRANSACTIONS_PATH, limit=10, offset=5)
    http_session.get(
        localleads_sandbox.url + TRANSACTIONS_PATH, headers={"Authorization": "Bearer nope-key"}, timeout=5
    )
    http_session.get(localleads_sandbox.url + "/_sandbox/state", timeout=5)  # admin: not recorded

    records = localleads_sandbox.requests
    assert [(r.method, r.path, r.query, r.auth_valid, r.status) for r in records] == [
        ("GET", BALANCE_PATH, {}, True, 200),
        ("GET", TRANSACTIONS_PATH, {"limit": "10", "offset": "5"}, True, 200),
        ("GET", TRANSACTIONS_PATH, {}, False, 401),
    ]
    assert all(r.request_id.startswith("req_") and r.fault is None for r in records)
    assert localleads_sandbox.request_count() == 3
    assert localleads_sandbox.request_count(BALANCE_PATH) == 1
    assert localleads_sandbox.request_count(TRANSACTIONS_PATH) == 2
    dumped = repr(records) + json.dumps([r.to_json() for r in records])
    assert "sandbox-key" not in dumped
    assert "nope-key" not in dumped

    localleads_sandbox.reset_request_log()
    assert localleads_sandbox.requests == []
    assert localleads_sandbox.request_count() == 0


def test_request_counts_stay_exact_past_the_log_cap(http_session):
    with SandboxServer(state=SandboxState(max_logged_requests=2)) as sandbox:
        for _ in range(5):
            get(http_session, sandbox, BALANCE_PATH)
        assert len(sandbox.requests) == 2
        assert sandbox.request_count(BALANCE_PATH) == 5
