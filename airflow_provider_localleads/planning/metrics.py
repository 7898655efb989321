"""Credit metrics through Airflow's Stats (sent only when ``[metrics] statsd_on`` or OTel is set up).

A metric must never fail a task or a watcher: any error from the metrics backend is logged and dropped.
"""

from __future__ import annotations

import logging
import re

from airflow.providers.common.compat.sdk import Stats

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def emit_credit_gauges(conn_id: str, available: int, needed: int) -> None:
    _send("localleads.available_credits", conn_id, available)
    _send("localleads.needed_credits", conn_id, needed)


def emit_low_credits(conn_id: str) -> None:
    _send("localleads.low_credits", conn_id)


def count_watcher_error(conn_id: str) -> None:
    # A watcher has no task to fail: this metric is what to alert on.
    _send("localleads.watcher_errors", conn_id)


def _send(metric: str, conn_id: str, gauge: int | None = None) -> None:
    name = f"{metric}.{_UNSAFE.sub('_', conn_id)}"
    try:
        if gauge is None:
            Stats.incr(name)
        else:
            Stats.gauge(name, gauge)
    except Exception:
        log.debug("Could not send the metric %s", name, exc_info=True)
