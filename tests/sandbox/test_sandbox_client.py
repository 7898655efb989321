"""``SandboxClient`` (``sandbox/client.py``): every control from another process, and its errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sandbox_support import get

from airflow_provider_localleads.sandbox import (
    BALANCE_PATH,
    Fault,
    InsufficientCredits,
    SandboxClient,
    SandboxError,
    SandboxServer,
)


def test_sandbox_client_drives_every_control(localleads_sandbox, http_session):
    client = SandboxClient(localleads_sandbox.url + "/")

    assert client.balance()["availableCredits"] == 82
    txn = client.spend(12, "Lead search: Dentists in Austin, TX (97 results)")
    assert (txn["type"], txn["amount"]) == ("DEDUCTION", -12)
    assert client.top_up(8)["amount"] == 8
    assert client.set_balance(monthly=300, last_reset_at=datetime(2026, 5, 1, tzinfo=UTC))["monthlyCredits"] == 300
    reset = client.reset_month(at=datetime(2026, 6, 1, tzinfo=UTC))
    assert reset["createdAt"] == "2026-06-01T00:00:00.000Z"
    assert localleads_sandbox.state.used_credits == 0

    inserted = client.insert_transactions(2, description="Arrived")
    assert client.delete_transaction(inserted[1]["id"])["id"] == inserted[1]["id"]
    with pytest.raises(KeyError):
        client.delete_transaction(inserted[1]["id"])

    fault = client.rate_limit_next(retry_after="3", path=BALANCE_PATH)
    assert isinstance(fault, Fault)
    client.fail_next(502, body="<html>Bad gateway</html>", content_type="text/html")
    client.slow_next(0.01)
    client.malformed_next("truncated")
    assert [f["kind"] for f in client.pending_faults()] == ["rate_limit", "error", "slow", "truncated"]
    limited = get(http_session, localleads_sandbox, BALANCE_PATH)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert client.clear_faults() == 3

    assert client.state()["balance"] == localleads_sandbox.balance()
    assert client.request_count() == 1
    assert client.request_count(BALANCE_PATH) == 1
    assert client.requests()[0]["status"] == 429
    client.reset_request_log()
    assert client.requests() == []


def test_sandbox_client_errors(localleads_sandbox):
    client = localleads_sandbox.client()
    with pytest.raises(InsufficientCredits, match="only 82 available"):
        client.spend(1000)
    with pytest.raises(ValueError, match="amount"):
        client.spend(-1)
    with pytest.raises(ValueError, match="times"):
        client.inject(Fault("html"), times=0)

    port = localleads_sandbox.port
    localleads_sandbox.stop()
    with pytest.raises(SandboxError, match=f"127.0.0.1:{port}"):
        SandboxClient(f"http://127.0.0.1:{port}", timeout=2).state()
    with pytest.raises(ValueError, match="url"):
        SandboxClient("file:///etc/passwd")
    with pytest.raises(ValueError, match="url"):
        SandboxClient("127.0.0.1:8765")


def test_sandbox_client_reports_a_server_that_is_not_the_sandbox(http_session):
    with SandboxServer() as other, pytest.raises(SandboxError, match="HTTP 404"):
        SandboxClient(other.url + "/api").state()
