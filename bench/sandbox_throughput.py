"""The sandbox under load: balance requests per second with a few client threads, for a bounded time.

    python bench/sandbox_throughput.py [--threads 1,4] [--seconds 4]

The sandbox runs in its own process; each client thread keeps one ``requests.Session`` (kept-alive
connection) and reads the balance as fast as it can for ``--seconds``. If the sandbox answers far
faster than any benchmark here asks (the hook bench makes one request at a time; the shared trigger
makes one per interval; pagination one page at a time), it is not their bottleneck.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import _common  # bench/ is sys.path[0] when run as: python bench/sandbox_throughput.py

PATHS = {"balance": "/api/v1/credits/balance", "transactions page (100)": "/api/v1/credits/transactions?limit=100"}


def hammer(url: str, threads: int, seconds: float) -> tuple[int, list[float], int]:
    import requests

    stop = time.monotonic() + seconds
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads

    def worker(i: int) -> None:
        session = requests.Session()
        headers = {"Authorization": "Bearer sandbox-key"}
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            response = session.get(url, headers=headers, timeout=10)
            response.content  # noqa: B018 - read the body
            latencies[i].append(time.perf_counter() - t0)
            if response.status_code == 200:
                counts[i] += 1
            else:
                errors[i] += 1
        session.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts), [x for per in latencies for x in per], sum(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    _common.isolate_airflow_home()
    print(_common.machine_line())
    rows = []
    with _common.sandbox_process("--transactions", "10000") as (url, _):
        for name, path in PATHS.items():
            for threads in (int(t) for t in args.threads.split(",")):
                hammer(url + path, threads, 0.5)  # warm-up
                ok, latencies, errors = hammer(url + path, threads, args.seconds)
                rows.append(
                    [name, threads, f"{ok / args.seconds:,.0f}", f"{statistics.median(latencies) * 1e3:.2f}",
                     f"{statistics.quantiles(latencies, n=100)[98] * 1e3:.2f}", errors]
                )  # fmt: skip
    print(f"client threads in one process (requests.Session each), {args.seconds:g} s per row")
    _common.print_table(["endpoint", "client threads", "requests/s", "median ms", "p99 ms", "errors"], rows)
    print(big_history_line())
    return 0


def big_history_line() -> str:
    """Building a 100,000-transaction history in process, and reading its last page (was a timed test)."""
    import requests

    from airflow_provider_localleads.sandbox import SandboxServer, SandboxState

    started = time.perf_counter()
    state = SandboxState(seed_transactions=100_000)
    built = time.perf_counter() - started
    with SandboxServer(state=state) as sandbox, requests.Session() as session:
        started = time.perf_counter()
        session.get(
            sandbox.url + "/api/v1/credits/transactions?limit=100&offset=99950",
            headers={"Authorization": f"Bearer {sandbox.api_key}"},
            timeout=30,
        ).raise_for_status()
        served = time.perf_counter() - started
    return f"100,000 transactions: built in {built:.2f} s, last page served in {served * 1e3:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
