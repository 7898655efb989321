"""Credit gauges sent through Airflow's Stats (only when ``[metrics] statsd_on`` or OTel is set up)."""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def emit_credit_gauges(conn_id: str, available: int, needed: int) -> None:
    """Gauge available and needed credits per connection, e.g. ``localleads.available_credits.<conn>``.

    Metrics must never fail a task: any error from the metrics backend is logged and dropped.
    """
    try:
        from airflow.providers.common.compat.sdk import Stats

        name = _UNSAFE.sub("_", conn_id)
        Stats.gauge(f"localleads.available_credits.{name}", available)
        Stats.gauge(f"localleads.needed_credits.{name}", needed)
    except Exception:
        log.debug("Could not emit LocalLeads credit gauges", exc_info=True)


def emit_low_credits(conn_id: str) -> None:
    """Count a low-credit warning (``warn_below``) per connection: ``localleads.low_credits.<conn>``."""
    _count("localleads.low_credits", conn_id)


def count_watcher_error(conn_id: str) -> None:
    """Count a credit watcher's failed poll, ``localleads.watcher_errors.<conn>``: it has no task to fail."""
    _count("localleads.watcher_errors", conn_id)


def _count(metric: str, conn_id: str) -> None:
    """``Stats.incr`` of ``<metric>.<conn>``; like the gauges, never raises."""
    try:
        from airflow.providers.common.compat.sdk import Stats

        Stats.incr(f"{metric}.{_UNSAFE.sub('_', conn_id)}")
    except Exception:
        log.debug("Could not count %s", metric, exc_info=True)
