"""The credits page: render time with a warm cache, and memory per cached connection.

    python bench/ui_page.py [--connections 20] [--renders 200]

A sandbox in this process with a busy month (300 deductions over 30 days, of 6 kinds, plus a top-up
and a reset), one ``AIRFLOW_CONN_*`` per connection pointing at it. Figures:

* cold: the first ``CreditsData.credits()`` of a connection (one balance request, the history's
  pages), then the HTML (``render_page``), the way the first page load after 5 minutes pays it;
* warm: a page load served from the cache (no request): data assembly + HTML, best and median;
* memory per cached connection: Python memory held by the cache (tracemalloc) after loading
  ``--connections`` connections, divided by their number;
* requests: what the warm renders cost the API (must be 0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import _common  # bench/ is sys.path[0] when run as: python bench/ui_page.py


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args()
    _common.isolate_airflow_home()
    print(_common.machine_line())

    from airflow_provider_localleads.sandbox import SandboxServer, SandboxState
    from airflow_provider_localleads.ui.data import CreditsData
    from airflow_provider_localleads.ui.render import render_page

    now = datetime.now(UTC)
    kinds = ["Lead search", "Enrichment", "Email finder", "Phone lookup", "Reviews", "Export"]
    with SandboxServer(state=SandboxState(monthly_credits=5000, seed_transactions=0)) as sandbox:
        sandbox.add_transaction("MONTHLY_RESET", 5000, "Monthly credit reset", now - timedelta(days=12))
        sandbox.add_transaction("TOP_UP", 500, "Coupon: SPRING", now - timedelta(days=20))
        for i in range(300):
            sandbox.add_transaction(amount=-(i % 7 + 1), description=f"{kinds[i % 6]}: job {i}",
                                    created_at=now - timedelta(hours=i * 2.4))  # fmt: skip
        ids = [f"localleads_bench_{i}" for i in range(args.connections)]
        for conn_id in ids:
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = sandbox.connection_json()

        data = CreditsData()
        t0 = time.perf_counter()
        page = render_page(conn_id=ids[0], connections=ids, data=data.credits(ids[0]))
        cold = time.perf_counter() - t0
        cold_requests = sandbox.request_count()

        sandbox.reset_request_log()
        warm = []
        for _ in range(args.renders):
            t0 = time.perf_counter()
            render_page(conn_id=ids[0], connections=ids, data=data.credits(ids[0]))
            warm.append(time.perf_counter() - t0)
        warm_requests = sandbox.request_count()

        data.clear()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for conn_id in ids:
            data.credits(conn_id)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))

    _common.print_table(
        ["figure", "value"],
        [
            ["cold page (data from the API + HTML)", f"{cold * 1000:.1f} ms, {cold_requests} requests"],
            ["warm page, best", f"{min(warm) * 1000:.2f} ms"],
            ["warm page, median", f"{statistics.median(warm) * 1000:.2f} ms"],
            [f"requests for {args.renders} warm pages", warm_requests],
            ["page size", f"{len(page.encode()) / 1024:.1f} KiB"],
            ["memory per cached connection", f"{held / len(ids) / 1024:.1f} KiB (tracemalloc, {len(ids)} connections)"],
        ],
    )
    return 0 if warm_requests == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
