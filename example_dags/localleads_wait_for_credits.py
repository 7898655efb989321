"""Wait for credits: hold the run until the LocalLeads balance covers the job, then start it.

    wait_for_credits  ->  start_paid_work

Where ``localleads_preflight`` skips a run that cannot be afforded, this DAG *waits*: for a top-up,
for credits to be freed, or for the monthly reset. The sensor succeeds as soon as
``available_credits >= estimated_cost`` and hands the balance it saw to the next task (XCom).

Try it against the sandbox (in another shell: ``python -m airflow_provider_localleads.sandbox``)::

    LOCALLEADS_EXAMPLE_POKE_INTERVAL=2 airflow dags test localleads_wait_for_credits -c '{"estimated_cost": 200}'

and, while it waits, top the sandbox up from a third shell::

    curl -X POST http://127.0.0.1:8765/_sandbox/top-up -d '{"amount": 200}'

Works on Airflow 2.11 and 3.x: every Airflow name comes from ``airflow.providers.common.compat.sdk``.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_localleads.sensors.credits import CreditsSensor

log = logging.getLogger("airflow.task")


def _poke_interval_from_env(name: str = "LOCALLEADS_EXAMPLE_POKE_INTERVAL", default: float = 300.0) -> float:
    """Seconds between balance checks; an environment variable so demos and tests can shorten it.

    ``poke_interval`` is not a templated field (only ``estimated_cost`` is), so it cannot come from
    ``params``: it is fixed when the DAG file is parsed. Reading an environment variable at parse
    time is fine (no network, no database); reading an Airflow Variable here would not be (a
    database/secrets request on every parse).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


# 300 s (5 minutes) by default: credits change slowly (searches, top-ups, the monthly reset), so
# checking every few seconds would only burn the API's rate limit. The sandbox demo sets 1-2 s.
POKE_INTERVAL = _poke_interval_from_env()

with DAG(
    dag_id="localleads_wait_for_credits",
    description="Wait (deferred, no worker slot) until LocalLeads credits cover the job, then start it.",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["localleads", "example"],
    params={
        "estimated_cost": Param(100, type="integer", minimum=0, description="Credits the job will use"),
    },
    doc_md=__doc__,
) as dag:
    wait_for_credits = CreditsSensor(
        task_id="wait_for_credits",
        estimated_cost="{{ params.estimated_cost }}",  # templated, like the operator's
        # deferrable=True: the sensor checks once on the worker; if the credits are not there yet it
        # hands the wait to the triggerer (an asyncio loop that holds thousands of waits at once) and
        # frees its worker slot. A sensor in "poke" mode would occupy a worker slot for the whole
        # wait, which may be hours. (mode= does not matter when deferrable.) Needs a running
        # `airflow triggerer`; `airflow dags test` runs the trigger inline.
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        # Give up after 6 hours: a run that has waited that long is probably waiting for the monthly
        # reset and should not sit in the UI forever. When the timeout hits the task FAILS, which is
        # what you want when someone should notice (a failure alert). Set soft_fail=True to mark it
        # *skipped* instead (and skip everything after it), when "no credits today" is normal.
        timeout=6 * 3600,
        soft_fail=False,
    )

    @task
    def start_paid_work(balance: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Runs only once the credits are there. ``balance`` is the sensor's XCom (CreditBalance.to_dict())."""
        cost = int((params or {})["estimated_cost"])
        log.info(
            "Credits are available: %d (monthly %d + bonus %d - used %d) for a job needing %d; next reset %s",
            balance["available_credits"],
            balance["monthly_credits"],
            balance["bonus_credits"],
            balance["used_credits"],
            cost,
            balance["next_reset_at"],
        )
        # Your paid-for work (lead search, email enrichment, ...) goes here. This example spends nothing.
        return {"estimated_cost": cost, "available_credits": balance["available_credits"]}

    # Passing wait_for_credits.output both wires the dependency and delivers the sensor's XCom.
    start_paid_work(balance=wait_for_credits.output)
