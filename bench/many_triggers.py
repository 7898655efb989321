"""1,000 waiting CreditsTriggers in one event loop (as in one triggerer): requests, loop lag, memory.

    python bench/many_triggers.py [--triggers 1000] [--interval 1.0] [--intervals 5]
    python bench/many_triggers.py --measures cold --modes native,fallback --cold-runs 5

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
* fire: seconds from the top-up until the last trigger fired (<= one interval expected);
* cold start (``--measures cold``, ``--cold-runs`` fresh processes per mode, after one unmeasured
  run that fills their bytecode cache, as a deployed triggerer has one): a process that has imported
  only what a triggerer has before it runs any trigger (``airflow.jobs.triggerer_job_runner``, the
  triggerer's own module; nothing of the provider, no warm-up poll) loads the trigger class on the
  loop as ``TriggerRunner.create_triggers`` does, starts the triggers and runs their first poll.
  Reported: how long loading the class takes (it runs on the loop); from then until one interval
  after the first poll, the modules imported on the loop's thread (and the time they took: what
  the provider itself can move off the loop), the max loop lag (what a triggerer logs as
  "Triggerer's async thread was blocked" at each start) with the CPU time the loop's thread used
  within it (on a busy machine the wall-clock lag also counts time the OS gave other processes),
  the max lag less the garbage collection inside it, and the longest collection: the first full
  collection over Airflow's heap comes soon after a process starts and is not the provider's.

Trigger log lines are written (to the child's stdout, at INFO), as a triggerer writes them to the task
logs; their number is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
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


HOOK_MODULE = "airflow_provider_localleads.hooks.localleads"
#: What the first poll would import if nothing had loaded it yet (reported as loaded or not at start).
HEAVY_MODULES = (HOOK_MODULE, "requests", "urllib3", "httpx")


class _LoopImports:
    """Records every module executed on one thread (the event loop's), and for how long.

    A meta-path finder that defers to the others and wraps the loader it found; nested imports are
    recorded too, so ``top_level_ms`` counts only the outermost import of each chain.
    """

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.recording = False
        self.modules: list[str] = []
        self.top_level_ms = 0.0
        self._depth = 0

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not self.recording or threading.get_ident() != self.thread_id:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            self.modules.append(name)
            self._depth += 1
            started = time.perf_counter()
            try:
                run(module)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.top_level_ms += (time.perf_counter() - started) * 1000

        with contextlib.suppress(AttributeError, TypeError):  # a loader that takes no attribute: not counted
            loader.exec_module = exec_module  # this spec's own loader instance
        return spec


class _GCPauses:
    """Garbage collections while ``recording``: (start, end) in ``time.monotonic()`` (= ``loop.time()``).

    A full collection over Airflow's heap, which happens once soon after a process starts, can stall
    the loop longer than every import did; it is not the provider's doing, so it is reported apart.
    """

    def __init__(self) -> None:
        import gc

        self.recording = False
        self.pauses: list[tuple[float, float]] = []
        self._started = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        elif self.recording:
            self.pauses.append((self._started, time.monotonic()))

    def within(self, start: float, end: float) -> float:
        """Seconds of garbage collection inside [start, end]."""
        return sum(max(0.0, min(end, gc_end) - max(start, gc_start)) for gc_start, gc_end in self.pauses)

    @property
    def longest_ms(self) -> float:
        return max((end - start for start, end in self.pauses), default=0.0) * 1000


def _cold_child(mode: str, count: int, interval: float) -> dict[str, Any]:
    """A triggerer's start in a fresh process: the first poll pays every first-use import."""
    import asyncio
    import importlib

    import airflow.jobs.triggerer_job_runner  # noqa: F401 - what a triggerer has loaded before any trigger

    loaded_before = [m for m in HEAVY_MODULES if m in sys.modules]
    imports = _LoopImports(threading.get_ident())
    sys.meta_path.insert(0, imports)
    gc_pauses = _GCPauses()
    # (loop time the heartbeat went to sleep, wall-clock lag, CPU time the loop's thread used meanwhile)
    gaps: list[tuple[float, float, float]] = []

    async def heartbeat(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.005)
            gaps.append((before, loop.time() - before - 0.005, time.thread_time() - cpu))

    def max_lag(start: float, end: float) -> tuple[float, float, float]:
        """For the heartbeats that went to sleep in [start, end), in ms: the max wall-clock lag, the
        CPU time of the loop's thread in that lag, and the max lag less the collections inside it."""
        window = [
            (lag, cpu, lag - gc_pauses.within(at, at + 0.005 + lag)) for at, lag, cpu in gaps if start <= at < end
        ]
        worst = max(window, default=(0.0, 0.0, 0.0))
        return worst[0] * 1000, worst[1] * 1000, max((w[2] for w in window), default=0.0) * 1000

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        await asyncio.sleep(0.3)
        # As TriggerRunner.get_trigger_by_classpath: imported on the loop (so it stalls the loop for
        # exactly as long as it takes), then one sleep(0).
        module, _, name = "airflow_provider_localleads.triggers.credits.CreditsTrigger".rpartition(".")
        t_load = time.perf_counter()
        trigger_class = getattr(importlib.import_module(module), name)
        class_load_ms = (time.perf_counter() - t_load) * 1000
        loaded_by_class = [m for m in HEAVY_MODULES if m in sys.modules and m not in loaded_before]
        manager = None
        if mode == "native":
            from airflow.triggers.shared_stream import SharedStreamManager

            manager = SharedStreamManager()
        else:
            poll_module = importlib.import_module("airflow_provider_localleads.triggers.poll")
            poll_module.NATIVE_SHARED_STREAMS = mode == "private"
        await asyncio.sleep(0)
        imports.recording = gc_pauses.recording = True  # from here on, what the loop's thread runs is the first poll's
        t_start = loop.time()  # lag counted from here: heartbeats that went to sleep after the class loaded

        async def run_one(trigger_id: int, trigger: Any) -> None:
            key = trigger.shared_stream_key() if manager is not None else None
            if manager is not None and key is not None:
                shared = manager.subscribe(trigger_id=trigger_id, trigger=trigger, key=key)
                stream = trigger.filter_shared_stream(shared)
            else:
                stream = trigger.run()
            try:
                async for _event in stream:
                    break
            finally:
                if manager is not None and key is not None:
                    await manager.unsubscribe(trigger_id, key)

        tasks = []
        for i in range(count):  # never enough credits: every trigger waits through the window
            trigger = trigger_class(
                estimated_cost=100 + i, localleads_conn_id="localleads_default", poll_interval=interval
            )
            tasks.append(asyncio.create_task(run_one(i + 1, trigger)))
            await asyncio.sleep(0)
        # The first poll starts at once; it is over (fanned out, logged) well within 1.5 s + one interval.
        await asyncio.sleep(1.5 + interval)
        t_end = loop.time()
        imports.recording = gc_pauses.recording = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if manager is not None:
            await manager.stop_all()
        stop.set()
        await beat
        wall, cpu, wall_less_gc = max_lag(t_start, t_end)
        return {
            "mode": mode,
            "measure": "cold",
            "loaded_before": loaded_before,
            "loaded_by_class": loaded_by_class,
            "class_load_ms": class_load_ms,
            "first_poll_lag": wall,
            "first_poll_cpu": cpu,
            "first_poll_lag_less_gc": wall_less_gc,
            "loop_imports": len(imports.modules),
            "loop_import_ms": imports.top_level_ms,
            "loop_imported_hook": HOOK_MODULE in imports.modules,
            "gc_pause_ms": gc_pauses.longest_ms,
        }

    return asyncio.run(main())


def _child(mode: str, measure: str, count: int, interval: float, intervals: int, url: str) -> dict[str, Any]:
    import asyncio
    import tracemalloc

    # Imported up front, as a triggerer has them loaded after its first poll; an import inside the
    # loop would show up as one-off lag that has nothing to do with the number of triggers.
    import airflow_provider_localleads.hooks.localleads  # noqa: F401
    from airflow_provider_localleads.sandbox import SandboxClient
    from airflow_provider_localleads.triggers import poll as _poll
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
        _poll.NATIVE_SHARED_STREAMS = False  # what Airflow < 3.3 gets
    elif mode == "private":
        _poll.NATIVE_SHARED_STREAMS = True  # run() = one private poll loop per trigger

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
    parser.add_argument("--measures", default="lag,memory,cold", help="any of lag, memory, cold (default all)")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes per mode for the cold start")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "MEASURE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    _common.isolate_airflow_home()

    if args.child:
        mode, measure, url = args.child
        if measure == "cold":
            result = _cold_child(mode, args.triggers, args.interval)
        else:
            result = _child(mode, measure, args.triggers, args.interval, args.intervals, url)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    # Imported here, not at the top: a cold-start child runs this file too and must load nothing extra.
    from airflow_provider_localleads.sandbox import SandboxClient
    from airflow_provider_localleads.triggers.poll import NATIVE_SHARED_STREAMS

    modes = [m for m in args.modes.split(",") if m in MODES and (m != "native" or NATIVE_SHARED_STREAMS)]
    measures = [m for m in ("lag", "memory", "cold") if m in args.measures.split(",")]
    print(_common.machine_line())
    print(
        f"{args.triggers} CreditsTriggers on one connection, poll interval {args.interval:g} s, sandbox in own process"
    )
    results: dict[str, dict[str, Any]] = {}
    cold: dict[str, list[dict[str, Any]]] = {}
    with _common.sandbox_process() as (url, conn_json):
        env = {**os.environ, "AIRFLOW_CONN_LOCALLEADS_DEFAULT": conn_json}
        admin = SandboxClient(url)
        # Cold starts as deployed: with compiled bytecode (pip and uv write it at install time, or
        # Python on first import). Under PYTHONDONTWRITEBYTECODE every import compiles its source,
        # several times slower than what a triggerer pays; so the children get a bytecode cache of
        # their own, filled by one run that is not measured.
        cold_env = {**env, "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "localleads-bench-pycache")}
        cold_env.pop("PYTHONDONTWRITEBYTECODE", None)
        if "cold" in measures and modes:
            _run_child(args, cold_env, modes[0], "cold", url)
        for mode in modes:
            for measure in measures:
                for _ in range(args.cold_runs if measure == "cold" else 1):
                    if measure == "cold":
                        admin.set_balance(monthly=100, bonus=25, used=43)
                        admin.reset_request_log()
                    result = _run_child(args, cold_env if measure == "cold" else env, mode, measure, url)
                    if result is None:
                        continue
                    if measure == "cold":
                        result["requests"] = admin.request_count(BALANCE_PATH)
                        cold.setdefault(mode, []).append(result)
                    else:
                        results.setdefault(mode, {}).update(result)

    if cold:
        print()
        _print_cold(cold, args.triggers)
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
    if not rows:
        return 0
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


def _run_child(
    args: argparse.Namespace, env: dict[str, str], mode: str, measure: str, url: str
) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--triggers", str(args.triggers), "--interval", str(args.interval)]
    cmd += ["--intervals", str(args.intervals), "--child", mode, measure, url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.stderr.write(out.stderr[-3000:])
        print(f"{mode}/{measure} failed (exit {out.returncode})")
        return None
    lines = out.stdout.splitlines()
    result: dict[str, Any] = json.loads(next(line for line in reversed(lines) if line.startswith("RESULT "))[7:])
    if measure == "lag":  # the triggers' own log lines, as the triggerer would write them
        result["log_lines"] = sum("LocalLeads credits" in line for line in lines)
    return result


def _print_cold(cold: dict[str, list[dict[str, Any]]], count: int) -> None:
    def spread(runs: list[dict[str, Any]], key: str) -> str:
        values = sorted(r[key] for r in runs)
        return f"{values[0]:.0f} / {values[len(values) // 2]:.0f} / {values[-1]:.0f}"

    rows = []
    for mode, runs in cold.items():
        rows.append(
            [
                MODES[mode],
                len(runs),
                spread(runs, "class_load_ms"),
                f"{spread(runs, 'loop_imports')} ({spread(runs, 'loop_import_ms')} ms)",
                "yes" if any(r["loop_imported_hook"] for r in runs) else "no",
                f"{spread(runs, 'first_poll_lag')} (CPU {spread(runs, 'first_poll_cpu')})",
                spread(runs, "first_poll_lag_less_gc"),
                spread(runs, "gc_pause_ms"),
                "/".join(str(r["requests"]) for r in runs),
            ]
        )
    print(f"cold start of {count} triggers in a fresh process (min / median / max over runs)")
    _common.print_table(
        [
            "mode",
            "runs",
            "ms loading the class (on the loop)",
            "first poll: modules imported on the loop",
            "hook module among them",
            "first poll: max lag ms (loop CPU ms in it)",
            "first poll: max lag ms less the GC in it",
            "longest GC ms",
            "balance requests",
        ],
        rows,
    )
    first = next(iter(cold.values()))[0]
    print(
        f"already loaded by the triggerer's own modules: {', '.join(first['loaded_before']) or 'none'} "
        f"(of {', '.join(HEAVY_MODULES)}); loaded by importing the trigger class: "
        f"{', '.join(first['loaded_by_class']) or 'none'}"
    )


if __name__ == "__main__":
    sys.exit(main())
