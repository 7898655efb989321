"""A local simulator of the LocalLeads Credits API, for tests, demos and benchmarks.

Run it next to Airflow::

    python -m airflow_provider_localleads.sandbox --port 8765

or in a test (see :mod:`airflow_provider_localleads.sandbox.pytest_plugin` for the fixtures)::

    with SandboxServer() as sandbox:
        sandbox.set_balance(used=120)
        ...

Standard library only and no Airflow import, so the pytest plugin stays cheap for every test session.

One module per concern: ``state`` (the organisation's credits and history), ``history`` (its
entries and seed), ``faults`` (misbehaviour on demand), ``requestlog`` (what was served), ``api`` (the
two endpoints), ``handler`` (HTTP plumbing), ``controls`` (every control, defined once), ``admin``
(the controls over HTTP), ``server`` (start/stop/url), ``client`` (the controls from another process).
"""

from __future__ import annotations

from airflow_provider_localleads.sandbox.client import SandboxClient, SandboxError
from airflow_provider_localleads.sandbox.faults import FAULT_KINDS, MALFORMED_KINDS, Fault
from airflow_provider_localleads.sandbox.history import Transaction
from airflow_provider_localleads.sandbox.requestlog import RecordedRequest
from airflow_provider_localleads.sandbox.server import DEFAULT_API_KEY, SandboxServer, is_loopback_host
from airflow_provider_localleads.sandbox.state import InsufficientCredits, SandboxState
from airflow_provider_localleads.sandbox.wire import BALANCE_PATH, TRANSACTIONS_PATH

__all__ = [
    "BALANCE_PATH",
    "DEFAULT_API_KEY",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "TRANSACTIONS_PATH",
    "Fault",
    "InsufficientCredits",
    "RecordedRequest",
    "SandboxClient",
    "SandboxError",
    "SandboxServer",
    "SandboxState",
    "Transaction",
    "is_loopback_host",
]
