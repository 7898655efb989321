"""Credit alerts: alert when credits run low, resume the backlog when they are back (Airflow 3).

    asset localleads_credits_threshold  <-  watcher CreditsThresholdTrigger(100, "below")
                                        <-  watcher CreditsThresholdTrigger(500, "above")
    decide  ->  alert_low_credits | resume_backlog

Each watcher fires once per crossing of its threshold in its direction (never again while the
balance stays on that side), so this DAG runs once when credits fall below 100 and once when they
climb back to 500 or more. ``decide`` reads the watchers' payloads from the run's triggering asset
events (``{"event": "below" | "above", "balance": {...}, "threshold": n}``) and picks the branch:
the newest event wins when several were batched into one run.

Against the sandbox: ``curl -X POST http://127.0.0.1:8765/_sandbox/spend -d '{"amount": 50}'`` (below)
and ``.../_sandbox/top-up -d '{"amount": 600}'`` (above). On Airflow 2.11 this file defines no DAG.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pendulum

from airflow_provider_localleads.triggers.events import ASSET_WATCHERS_AVAILABLE, CreditsThresholdTrigger

log = logging.getLogger("airflow.task")

WATCH_INTERVAL = float(os.environ.get("LOCALLEADS_EXAMPLE_WATCH_INTERVAL", "300"))
LOW, RESUME_AT = 100, 500

if ASSET_WATCHERS_AVAILABLE:
    from airflow.sdk import DAG, Asset, AssetWatcher, task

    CREDITS_THRESHOLD = Asset(
        "localleads_credits_threshold",
        watchers=[
            AssetWatcher(
                name="localleads_credits_low",
                trigger=CreditsThresholdTrigger(LOW, "below", poll_interval=WATCH_INTERVAL),
            ),
            AssetWatcher(
                name="localleads_credits_back",
                trigger=CreditsThresholdTrigger(RESUME_AT, "above", poll_interval=WATCH_INTERVAL),
            ),
        ],
    )

    with DAG(
        dag_id="localleads_credit_alerts",
        schedule=[CREDITS_THRESHOLD],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["localleads", "example", "watcher"],
        doc_md=__doc__,
    ) as dag:

        @task.branch
        def decide(triggering_asset_events: Any = None) -> list[str]:
            # Not `(triggering_asset_events or {}).get(...)`: before 3.2 an Asset cannot be a dict key.
            events = triggering_asset_events.get(CREDITS_THRESHOLD, []) if triggering_asset_events else []
            payloads = [event.extra["payload"] for event in sorted(events, key=lambda e: e.timestamp)]
            if not payloads:
                log.info("Started by hand: no credit threshold was crossed")
                return []
            newest = payloads[-1]
            log.info(
                "Credits crossed %s %d: %d available",
                newest["event"],
                newest["threshold"],
                newest["balance"]["available_credits"],
            )
            return ["alert_low_credits"] if newest["event"] == "below" else ["resume_backlog"]

        @task
        def alert_low_credits() -> None:
            log.warning("LocalLeads credits are below %d: top up, or pause the paid DAGs", LOW)  # e.g. a notifier

        @task
        def resume_backlog() -> None:
            log.info("LocalLeads credits are back above %d: resuming the backlog", RESUME_AT)  # e.g. unpause DAGs

        decide() >> [alert_low_credits(), resume_backlog()]
