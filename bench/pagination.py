"""Pagination: ``iter_transactions()`` over 10,000 and 100,000 transactions.

    python bench/pagination.py [--sizes 10000,100000]

For each N, a sandbox seeded with exactly N transactions (in its own process), then one full
``LocalLeadsHook.iter_transactions()`` pass counting what it yields. Figures: requests made, against
two budgets: plain offset paging's ceil(N/100) + 2, and the exactly-once listing's own bound
1 + ceil((N - 100) / 98). The API pages by offset only and promises no order among equal
``createdAt``; proving that nothing was skipped between two pages takes one already-seen transaction
strictly newer than the cursor plus the last one yielded, so every page after the first re-reads 2
of its 100 items (about 2% more requests than paging blindly). Then connections opened (urllib3's
count for the hook's pool: 1 means every page went over one kept-alive connection), the peak of
Python memory allocated during the pass (tracemalloc, in a second pass; it must not grow with N: one
page in memory at a time), and the time per pass.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import tracemalloc

import _common  # bench/ is sys.path[0] when run as: python bench/pagination.py

TRANSACTIONS_PATH = "/api/v1/credits/transactions"


def one_pass(hook: object) -> int:
    """Iterate everything, keeping nothing (as a consumer that streams to a file would)."""
    count = 0
    for _ in hook.iter_transactions():  # type: ignore[attr-defined]
        count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    _common.isolate_airflow_home()
    print(_common.machine_line())
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.sandbox import SandboxClient

    rows = []
    peaks = {}
    for n in (int(x) for x in args.sizes.split(",")):
        with _common.sandbox_process("--transactions", str(n)) as (url, conn_json):
            os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"] = conn_json
            admin = SandboxClient(url)
            hook = LocalLeadsHook("localleads_default")
            hook.get_balance()  # connection looked up, session opened: not part of the pass
            admin.reset_request_log()
            started = time.perf_counter()
            count = one_pass(hook)
            seconds = time.perf_counter() - started
            requests = admin.request_count(TRANSACTIONS_PATH)
            opened = _common.connections_opened(hook.session, url)

            tracemalloc.start()
            count2 = one_pass(hook)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            hook.close()
        assert count == count2 == n, (count, count2, n)
        blind = math.ceil(n / 100) + 2
        bound = 1 + max(0, math.ceil((n - 100) / 98))
        peaks[n] = peak
        rows.append(
            [f"{n:,}", f"{count:,}", requests, blind, f"{requests / blind:.3f}", bound,
             "yes" if requests <= bound else "NO", opened, f"{peak / 1e6:.2f}", f"{seconds:.1f}", f"{n / seconds:,.0f}"]
        )  # fmt: skip
    _common.print_table(
        ["N", "yielded", "requests", "ceil(N/100)+2", "ratio", "bound 1+ceil((N-100)/98)", "within bound",
         "connections opened", "peak MB (tracemalloc)", "seconds", "transactions/s"],
        rows,
    )  # fmt: skip
    sizes = sorted(peaks)
    if len(sizes) > 1:
        print(f"\npeak memory ratio N={sizes[-1]:,} / N={sizes[0]:,}: {peaks[sizes[-1]] / peaks[sizes[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
