"""Monthly lead refresh: starts as soon as the LocalLeads credits reset (event-driven, Airflow 3).

    asset localleads_credits_reset  <-  watcher CreditsResetTrigger
    refresh_leads                      (one run per monthly reset)

No schedule to guess: the triggerer polls the balance (every 300 s by default, one request for all
watchers and deferred sensors on the connection) and, when ``lastResetAt`` moves on, records one
asset event on ``localleads_credits_reset``, which queues one run of this DAG. The run reads what the
watcher saw from its triggering asset events (``extra["payload"]``): ``{"event": "reset",
"balance": {...}}``.

Try it against the sandbox (Airflow 3 with a triggerer and a scheduler running, this DAG unpaused)::

    curl -X POST http://127.0.0.1:8765/_sandbox/reset-month -d '{}'

``airflow dags test localleads_monthly_refresh`` runs it by hand, without a triggering event (the task
says so). On Airflow 2.11, which has no AssetWatcher, this file defines no DAG.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pendulum

from airflow_provider_localleads.triggers.events import ASSET_WATCHERS_AVAILABLE, CreditsResetTrigger

log = logging.getLogger("airflow.task")

#: Seconds between balance reads; an environment variable (read at parse time, no network) so demos
#: and tests can shorten it. Changing it changes the watcher (a new trigger row).
WATCH_INTERVAL = float(os.environ.get("LOCALLEADS_EXAMPLE_WATCH_INTERVAL", "300"))

if ASSET_WATCHERS_AVAILABLE:
    from airflow.sdk import DAG, Asset, AssetWatcher, task

    CREDITS_RESET = Asset(
        "localleads_credits_reset",
        watchers=[
            AssetWatcher(
                name="localleads_reset",
                trigger=CreditsResetTrigger(localleads_conn_id="localleads_default", poll_interval=WATCH_INTERVAL),
            )
        ],
    )

    with DAG(
        dag_id="localleads_monthly_refresh",
        schedule=[CREDITS_RESET],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["localleads", "example", "watcher"],
        doc_md=__doc__,
    ) as dag:

        @task
        def refresh_leads(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
            """One run may carry several resets (events are batched): handle each."""
            # Not `(triggering_asset_events or {}).get(...)`: before 3.2 an Asset cannot be a dict key.
            events = triggering_asset_events.get(CREDITS_RESET, []) if triggering_asset_events else []
            payloads = [event.extra["payload"] for event in events]
            if not payloads:
                log.info("Started by hand: no credits reset triggered this run")
            for payload in payloads:
                balance = payload["balance"]
                log.info(
                    "Credits reset at %s: %d available; refreshing leads (next reset %s)",
                    balance["last_reset_at"],
                    balance["available_credits"],
                    balance["next_reset_at"],
                )
            return payloads

        refresh_leads()
