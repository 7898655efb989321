"""Credit audit: where did the LocalLeads credits go?

    summarise_transactions  ->  log_report

``summarise_transactions`` streams the whole credit history through
``LocalLeadsHook.iter_transactions()`` (newest first, one page of at most 100 in memory at a time,
each transaction exactly once even if new ones arrive while it pages) and reduces it to a small,
JSON-safe summary: count and total per transaction type and the five biggest deductions. The last
30 days' spending comes from ``LocalLeadsHook.get_usage(days=30)``: credits spent, the rate per day,
and the date the available credits run out at that rate (None: they last until the next reset).
``log_report`` prints that summary as a table.

Only the summary goes to XCom, never the raw history: XCom lives in Airflow's metadata database
and is meant for small values. Schedule it (e.g. ``schedule="@weekly"``) to keep an eye on spend.

Works on Airflow 2.11 and 3.x: every Airflow name comes from ``airflow.providers.common.compat.sdk``.
"""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

log = logging.getLogger("airflow.task")

RECENT_DAYS = 30
TOP_N = 5

with DAG(
    dag_id="localleads_credit_audit",
    description="Summarise the LocalLeads credit history: totals per type, recent spend, biggest deductions.",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["localleads", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def summarise_transactions() -> dict[str, Any]:
        """Stream every transaction once and keep only running totals (memory stays flat)."""
        # Imported here, not at the top of the file: the hook pulls in `requests`, and DAG files are
        # parsed far more often than tasks run.
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        now = datetime.now(UTC)
        per_type: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "total": 0})
        # A bounded heap: the TOP_N largest deductions seen so far, whatever the history's length.
        biggest: list[tuple[int, str, dict[str, Any]]] = []
        count = 0
        oldest: datetime | None = None
        newest: datetime | None = None

        with LocalLeadsHook() as hook:
            # One balance read and the history back to RECENT_DAYS ago (only those pages).
            usage = hook.get_usage(days=RECENT_DAYS, now=now)
            for txn in hook.iter_transactions(page_size=100):  # 100 = the API's largest page
                count += 1
                newest = newest or txn.created_at  # newest first, so the first one is the newest
                oldest = txn.created_at
                bucket = per_type[txn.type]
                bucket["count"] += 1
                bucket["total"] += txn.amount
                # Deductions have negative amounts; they are reported as positive numbers.
                if txn.amount < 0:
                    entry = (-txn.amount, txn.id, txn.to_dict())
                    if len(biggest) < TOP_N:
                        heapq.heappush(biggest, entry)
                    elif entry[:2] > biggest[0][:2]:
                        heapq.heapreplace(biggest, entry)

        # Plain dicts, ints and ISO strings only: the return value goes to XCom as JSON.
        return {
            "as_of": now.isoformat(timespec="seconds"),
            "transactions": count,
            "newest": newest.isoformat(timespec="seconds") if newest else None,
            "oldest": oldest.isoformat(timespec="seconds") if oldest else None,
            "per_type": {name: dict(values) for name, values in sorted(per_type.items())},
            "recent_days": RECENT_DAYS,
            "spent_recent": usage.spent,
            "usage": usage.to_dict(),  # spent, per_day, deductions, since, next_reset_at, runs_out_at, ...
            "usage_summary": usage.summary(),
            "biggest_deductions": [item for _, _, item in sorted(biggest, key=lambda e: e[:2], reverse=True)],
        }

    @task
    def log_report(summary: dict[str, Any]) -> None:
        """Turn the summary into a table a person can read in the task log."""
        lines = [
            f"LocalLeads credit audit as of {summary['as_of']}: {summary['transactions']} transactions "
            f"({summary['oldest']} .. {summary['newest']})",
            "",
            f"{'type':<16} {'count':>7} {'total':>9}",
            f"{'-' * 16} {'-' * 7} {'-' * 9}",
        ]
        for name, values in summary["per_type"].items():
            lines.append(f"{name:<16} {values['count']:>7} {values['total']:>+9}")
        lines += [
            "",
            f"Credits spent in the last {summary['recent_days']} days: {summary['spent_recent']} "
            f"in {summary['usage']['deductions']} deductions",
            f"Forecast: {summary['usage_summary']}",
            "",
            f"Biggest {len(summary['biggest_deductions'])} deductions:",
        ]
        for item in summary["biggest_deductions"]:
            lines.append(f"  {item['amount']:>6}  {item['created_at'][:19]}  {item['description']}")
        log.info("\n".join(lines))

    log_report(summarise_transactions())
