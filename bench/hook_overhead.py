"""Hook overhead: ``LocalLeadsHook.get_balance()`` vs a bare ``requests.Session().get(...).json()``.

    python bench/hook_overhead.py [--pairs 2000]

Both against the same sandbox URL on loopback (the sandbox in its own process), both on a kept-alive
connection. Paired runs: each pair times one bare call and one hook call back to back, alternating
which goes first; the figure is the median of the per-pair ratios (hook / bare), so drifts of the
machine cancel out. Also checks that the hook reuses one connection across all its calls
(urllib3's count of connections opened by the hook's pool).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import _common  # bench/ is sys.path[0] when run as: python bench/hook_overhead.py

BALANCE_PATH = "/api/v1/credits/balance"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    _common.isolate_airflow_home()
    print(_common.machine_line())

    import requests

    with _common.sandbox_process() as (url, conn_json):
        os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"] = conn_json
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        hook = LocalLeadsHook("localleads_default")
        bare = requests.Session()
        headers = {"Authorization": "Bearer sandbox-key", "Accept": "application/json"}
        full_url = url + BALANCE_PATH

        def bare_call() -> object:
            return bare.get(full_url, headers=headers, timeout=(5, 30)).json()

        for _ in range(args.warmup):
            bare_call()
            hook.get_balance()
        assert bare_call()["data"]["availableCredits"] == hook.get_balance().available_credits

        ratios, bare_times, hook_times = [], [], []
        clock = time.perf_counter
        for i in range(args.pairs):
            if i % 2:
                t0 = clock()
                bare_call()
                t1 = clock()
                hook.get_balance()
                t2 = clock()
                b, h = t1 - t0, t2 - t1
            else:
                t0 = clock()
                hook.get_balance()
                t1 = clock()
                bare_call()
                t2 = clock()
                h, b = t1 - t0, t2 - t1
            bare_times.append(b)
            hook_times.append(h)
            ratios.append(h / b)

        opened = _common.connections_opened(hook.session, url)
        hook.close()

    print(f"{args.pairs} paired calls after {args.warmup} warm-up pairs; sandbox in its own process")
    _common.print_table(
        ["call", "median µs", "p90 µs"],
        [
            ["requests.Session().get(url).json()", f"{statistics.median(bare_times) * 1e6:.0f}",
             f"{statistics.quantiles(bare_times, n=10)[-1] * 1e6:.0f}"],
            ["LocalLeadsHook.get_balance()", f"{statistics.median(hook_times) * 1e6:.0f}",
             f"{statistics.quantiles(hook_times, n=10)[-1] * 1e6:.0f}"],
        ],
    )  # fmt: skip
    print(f"\nmedian of paired ratios hook / bare: {statistics.median(ratios):.3f}")
    print(f"connections opened by the hook for {args.pairs + args.warmup + 1} calls: {opened}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
