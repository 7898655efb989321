"""A local simulator of the LocalLeads Credits API, for tests, demos and benchmarks.

Run it next to Airflow::

    python -m airflow_provider_localleads.sandbox --port 8765

or in a test (see :mod:`airflow_provider_localleads.sandbox.pytest_plugin` for the fixtures)::

    with SandboxServer() as sandbox:
        sandbox.set_balance(used=120)
        ...

Standard library only and no Airflow import, so the pytest plugin stays cheap for every test session.
"""

from __future__ import annotations

from airflow_provider_localleads.sandbox.server import (
    DEFAULT_API_KEY,
    SandboxClient,
    SandboxError,
    SandboxServer,
    is_loopback_host,
)
from airflow_provider_localleads.sandbox.state import (
    BALANCE_PATH,
    FAULT_KINDS,
    MALFORMED_KINDS,
    TRANSACTIONS_PATH,
    Fault,
    InsufficientCredits,
    RecordedRequest,
    SandboxState,
    Transaction,
)

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
