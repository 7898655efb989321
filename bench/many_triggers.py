"""1,000 waiting CreditsTriggers in one event loop (as in one triggerer): requests, loop lag, memory.

    python bench/many_triggers.py [--triggers 1000] [--interval 1.0] [--intervals 5]

Compares, each in a fresh process against a sandbox running in its own process:

* ``one poll per trigger``: every trigger runs its filter over a private poll loop (what every
  trigger did before sharing, and what a trigger without a shared-stream key does);
* ``SharedStreamManager`` (Airflow 3.3+): driven exactly as ``TriggerRunner.run_trigger`` does it
  (``subscribe(trigger_id=, trigger=, key=)`` -> ``filter_shared_stream`` -> ``unsubscribe``);
* ``run(), in-process group``: ``CreditsTrigger.run()`` as the triggerer of Airflow < 3.3 calls it.

All triggers wait for more credits than the sandbox has (thresholds spread over 100..1099, the
sandbox holds 82), so every poll fans out to every trigger; after the steady phase the sandbox is
topped up and every trigger must fire. Figures:

* requests/interval: the most balance requests the sandbox saw in any window of one poll interval,
  in the steady phase;
* loop lag: a heartbeat coroutine sleeps 5 ms in a loop; lag = how much later than asked it woke
  (max and 99th percentile), at start-up (subscribing + first poll), in the steady phase, and while
  all the triggers fire;
* memory: the growth of the process's RSS from the empty loop (heartbeat only) to the end of the
  steady phase; and, in a separate run, tracemalloc of everything allocated between the empty loop
  and 1,000 subscribed triggers after two polls (OpenSSL's own memory is not seen by tracemalloc;
  the TLS context is shared by every HTTP client in the process, so there is little of it);
* fire: seconds from the top-up until the last trigger fired (<= one interval expected).

Trigger log lines are written (to the child's stdout, at INFO), as a triggerer writes them to the task
logs; their number is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import _common  # bench/ is sys.path[0] when run as: python bench/many_triggers.py

MODES = {
    "private": "one poll per trigger",
    "native": "SharedStreamManager (3.3+)",
    "fallback": "run(), in-process group",
}
BALANCE_PATH = "/api/v1/credits/balance"
SANDBOX_AVAILABLE = 82  # the sandbox's default balance: 100 + 25 - 43


# ---------------------------------------------------------------------------------------------- child


def _child(mode: str, measure: str, count: int, interval: float, intervals: int, url: str) -> dict[str, Any]:
    import asyncio
    import tracemalloc

    # Imported up front, as a triggerer has them loaded after its first poll; an import inside the
    # loop would show up as one-off lag that has nothing to do with the number of triggers.
    import airflow_provider_localleads.hooks.localleads  # noqa: F401
    from airflow_provider_localleads.sandbox import SandboxClient
    from airflow_provider_localleads.triggers import credits
    from airflow_provider_localleads.triggers.credits import CreditsTrigger

    async def warm_up() -> None:
        # One poll before measuring: the first connection look-up imports part of Airflow's task
        # runtime (~0.1-0.2 s, once per process), which a running triggerer has long loaded.
        from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

        await LocalLeadsHook("localleads_default").aget_balance()

    asyncio.run(warm_up())
    admin = SandboxClient(url)
    admin.set_balance(monthly=100, bonus=25, used=43)
    admin.reset_request_log()

    manager = None
    if mode == "native":
        from airflow.triggers.shared_stream import SharedStreamManager

        manager = SharedStreamManager()
    elif mode == "fallback":
        credits.NATIVE_SHARED_STREAMS = False  # what Airflow < 3.3 gets
    elif mode == "private":
        credits.NATIVE_SHARED_STREAMS = True  # run() = one private poll loop per trigger

    fired: list[float] = []
    gaps: list[tuple[float, float]] = []  # (loop time, lag)

    async def heartbeat(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            gaps.append((loop.time(), loop.time() - before - 0.005))

    async def run_one(trigger_id: int, trigger: CreditsTrigger) -> None:
        # Mirrors TriggerRunner.run_trigger (airflow/jobs/triggerer_job_runner.py).
        key = trigger.shared_stream_key() if manager is not None else None
        if manager is not None and key is not None:
            stream = trigger.filter_shared_stream(manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key))
        else:
            stream = trigger.run()
        try:
            async for event in stream:
                assert event.payload["status"] == "success", event.payload
                fired.append(time.monotonic())
                break
        finally:
            if manager is not None and key is not None:
                await manager.unsubscribe(trigger_id, key)

    def lag_stats(start: float, end: float) -> tuple[float, float]:
        window = sorted(lag for at, lag in gaps if start <= at < end)
        if not window:
            return 0.0, 0.0
        return window[-1] * 1000, window[min(len(window) - 1, int(len(window) * 0.99))] * 1000

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        await asyncio.sleep(0.5)
        if measure == "memory":
            tracemalloc.start()
        base_traced = tracemalloc.get_traced_memory()[0] if measure == "memory" else 0
        base_rss = _common.rss_bytes()
        t_start = loop.time()
        triggers, tasks = [], []
        for i in range(count):  # as TriggerRunner.create_triggers: build and start one per loop turn
            trigger = CreditsTrigger(
                estimated_cost=100 + i, localleads_conn_id="localleads_default", poll_interval=interval
            )
            triggers.append(trigger)
            tasks.append(asyncio.create_task(run_one(i + 1, trigger)))
            await asyncio.sleep(0)
        result: dict[str, Any] = {"mode": mode, "measure": measure}
        if measure == "memory":
            await asyncio.sleep(interval * 2 + 0.5)  # subscribed, and two polls fanned out
            current, peak = tracemalloc.get_traced_memory()
            result["traced_mb"] = (current - base_traced) / 1e6
            result["traced_peak_mb"] = (peak - base_traced) / 1e6
            result["rss_mb"] = (_common.rss_bytes() - base_rss) / 1e6
            tracemalloc.stop()
        else:
            # Start-up ends once every poll loop has made its first request (one per trigger
            # without sharing, one in all with it), plus one interval for the first fan-out.
            first_polls = count if mode == "private" else 1
            while await asyncio.to_thread(admin.request_count, BALANCE_PATH) < first_polls:
                await asyncio.sleep(0.2)
            result["startup_seconds"] = loop.time() - t_start
            await asyncio.sleep(interval)
            t_steady = loop.time()
            await asyncio.sleep(interval * intervals)
            t_end = loop.time()
            result["rss_mb"] = (_common.rss_bytes() - base_rss) / 1e6
            result["startup_lag"] = lag_stats(t_start, t_steady)
            result["steady_lag"] = lag_stats(t_steady, t_end)
            wall_offset = time.time() - loop.time()
            records = await asyncio.to_thread(admin.requests, BALANCE_PATH)
            stamps = sorted(
                _parse_at(r["at"]) - wall_offset for r in records if _parse_at(r["at"]) - wall_offset >= t_steady
            )
            result["max_per_interval"] = _max_in_window(stamps, interval)
            result["steady_requests"] = len(stamps)
            result["total_requests"] = len(records)
            t_fire = loop.time()
            fire_wall = time.monotonic()
            await asyncio.to_thread(admin.top_up, 2000, "bench top-up")
            try:
                async with asyncio.timeout(interval * 3 + 10):
                    await asyncio.gather(*tasks)
            except TimeoutError:
                pass
            result["fired"] = len(fired)
            result["fire_seconds"] = (max(fired) - fire_wall) if fired else None
            result["fire_lag"] = lag_stats(t_fire, loop.time())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.set()
        await beat
        if manager is not None:
            result["groups_left"] = len(manager._groups)
            await manager.stop_all()
        return result

    return asyncio.run(main())


def _parse_at(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _max_in_window(stamps: list[float], width: float) -> int:
    best, lo = 0, 0
    for hi, at in enumerate(stamps):
        while at - stamps[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --------------------------------------------------------------------------------------------- parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds (default 1)")
    parser.add_argument("--intervals", type=int, default=5, help="steady-phase length in intervals (default 5)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", nargs=3, metavar=("MODE", "MEASURE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _common.isolate_airflow_home()

    if args.child:
        mode, measure, url = args.child
        result = _child(mode, measure, args.triggers, args.interval, args.intervals, url)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    from airflow_provider_localleads.triggers.credits import NATIVE_SHARED_STREAMS

    modes = [m for m in args.modes.split(",") if m in MODES and (m != "native" or NATIVE_SHARED_STREAMS)]
    print(_common.machine_line())
    print(
        f"{args.triggers} CreditsTriggers on one connection, poll interval {args.interval:g} s, sandbox in own process"
    )
    results: dict[str, dict[str, Any]] = {}
    with _common.sandbox_process() as (url, conn_json):
        env = {**os.environ, "AIRFLOW_CONN_LOCALLEADS_DEFAULT": conn_json}
        for mode in modes:
            for measure in ("lag", "memory"):
                cmd = [sys.executable, __file__, "--triggers", str(args.triggers), "--interval", str(args.interval)]
                cmd += ["--intervals", str(args.intervals), "--child", mode, measure, url]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if out.returncode:
                    sys.stderr.write(out.stderr[-3000:])
                if out.returncode:
                    print(f"{mode}/{measure} failed (exit {out.returncode})")
                    continue
                lines = out.stdout.splitlines()
                result = json.loads(next(line for line in reversed(lines) if line.startswith("RESULT "))[7:])
                if measure == "lag":  # the triggers' own log lines, as the triggerer would write them
                    result["log_lines"] = sum("LocalLeads credits" in line for line in lines)
                results.setdefault(mode, {}).update(result)

    rows = []
    for mode in modes:
        r = results.get(mode, {})
        if "steady_lag" not in r:
            continue
        rows.append(
            [
                MODES[mode],
                r["max_per_interval"],
                f"{r['startup_lag'][0]:.0f} / {r['startup_lag'][1]:.0f}",
                f"{r['steady_lag'][0]:.1f} / {r['steady_lag'][1]:.1f}",
                f"{r['fire_lag'][0]:.1f} / {r['fire_lag'][1]:.1f}",
                f"{r['traced_mb']:.1f} (peak {r['traced_peak_mb']:.1f})" if "traced_mb" in r else "n/a",
                f"{r['rss_mb']:.0f}",
                f"{r['fired']}/{args.triggers} in {r['fire_seconds']:.2f} s" if r["fire_seconds"] is not None else "-",
                f"{r['startup_seconds']:.1f}",
                r["log_lines"],
            ]
        )
    print()
    _common.print_table(
        [
            "mode",
            "balance requests / interval",
            "lag ms at start (max / p99)",
            "lag ms steady (max / p99)",
            "lag ms while firing (max / p99)",
            "tracemalloc MB",
            "RSS growth MB",
            "fired after top-up",
            "start-up s",
            "trigger log lines",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
