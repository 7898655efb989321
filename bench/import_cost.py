"""DAG-parse cost: what importing the operator and sensor modules adds to importing Airflow's SDK.

    python bench/import_cost.py [--runs 15]

Each measurement is a fresh interpreter; the wall time of the imports is taken inside it with
``time.perf_counter`` (interpreter start-up excluded). Best of ``--runs`` for each case, the cases
interleaved so that a noisy moment hits all of them alike. Bytecode is cached as in a deployment
(in a private ``PYTHONPYCACHEPREFIX``, written by a warm-up run, even if ``PYTHONDONTWRITEBYTECODE``
is set): otherwise every run would compile all of Airflow and measure the compiler.

The ratio is computed two ways: best total time of each case, and (less noisy) the baseline's
best plus the best time of the provider's imports alone, taken in the same processes after the
baseline imports.

* baseline: ``import airflow.sdk`` (Airflow 3), or on 2.11 ``import airflow`` plus
  ``airflow.models.baseoperator`` and ``airflow.sensors.base`` (what a 2.11 DAG file pays);
* + provider: the baseline, then ``airflow_provider_localleads.operators.credits`` and ``.sensors.credits``;
* also shown: the baseline plus the SDK's own ``BaseOperator``/``BaseSensorOperator`` classes, which
  any DAG with a sensor loads anyway, to separate their cost from the provider's.

Also lists the modules the provider's two imports add, and checks that nothing heavy (httpx, aiohttp,
tenacity, requests, the sandbox, the hook) is among them.

* + plugin: the baseline, then the credits page's plugin module, which every Airflow process that
  loads plugins imports (scheduler, workers, triggerer, DAG processor): its own cost, and that it
  adds no web framework (FastAPI, Starlette, Flask) nor any of the heavy modules above.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import _common  # bench/ is sys.path[0] when run as: python bench/import_cost.py

BASELINE_3 = "import airflow.sdk"
BASELINE_2 = "import airflow, airflow.models.baseoperator, airflow.sensors.base"
SDK_CLASSES_3 = "import airflow.sdk; from airflow.sdk import BaseOperator, BaseSensorOperator"
PROVIDER = "import airflow_provider_localleads.operators.credits, airflow_provider_localleads.sensors.credits"
PLUGIN = "import airflow_provider_localleads.ui.plugin"
WEB = ("fastapi", "starlette", "flask", "flask_appbuilder", "airflow_provider_localleads.ui.app")
HEAVY = ("httpx", "aiohttp", "tenacity", "requests", "airflow_provider_localleads.sandbox",
         "airflow_provider_localleads.hooks.localleads", "airflow_provider_localleads.triggers.credits")  # fmt: skip

CHILD = """
import sys, time, json
t0 = time.perf_counter()
exec({setup!r})
t1 = time.perf_counter()
before = set(sys.modules)
exec({extra!r})
t2 = time.perf_counter()
print(json.dumps({{"setup": t1 - t0, "extra": t2 - t1, "total": t2 - t0,
                   "added": sorted(set(sys.modules) - before)}}))
"""


def child_env() -> dict[str, str]:
    """After ``isolate_airflow_home()``: its AIRFLOW_HOME, plus a private, writable bytecode cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="localleads-bench-pycache-")
    return env


def measure(setup: str, extra: str, env: dict[str, str]) -> dict:
    code = CHILD.format(setup=setup, extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        raise SystemExit(f"import failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    _common.isolate_airflow_home()
    env = child_env()
    print(_common.machine_line())

    probe = subprocess.run([sys.executable, "-c", "import airflow.sdk"], capture_output=True, check=False, env=env)
    airflow3 = probe.returncode == 0
    baseline = BASELINE_3 if airflow3 else BASELINE_2
    cases = {"baseline": (baseline, "pass"), "+ provider": (baseline, PROVIDER), "+ plugin": (baseline, PLUGIN)}
    if airflow3:
        cases["+ SDK operator/sensor classes"] = (SDK_CLASSES_3, "pass")
    for setup, extra in cases.values():  # warm the OS file cache and write the .pyc files
        measure(setup, extra, env)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    extra_times: list[float] = []
    plugin_times: list[float] = []
    last: dict[str, dict] = {}
    for _ in range(args.runs):
        for name, (setup, extra) in cases.items():
            last[name] = measure(setup, extra, env)
            samples[name].append(last[name]["total"])
            if name == "+ provider":
                extra_times.append(last[name]["extra"])
            if name == "+ plugin":
                plugin_times.append(last[name]["extra"])

    best = {name: min(values) for name, values in samples.items()}
    best_extra = min(extra_times)
    rows = [[name, cases[name][0] + ("; " + cases[name][1] if cases[name][1] != "pass" else ""),
             f"{best[name] * 1000:.0f}", f"{best[name] / best['baseline']:.3f}"] for name in cases]  # fmt: skip
    print(f"best of {args.runs} fresh interpreters each")
    _common.print_table(["case", "imports", "best ms", "ratio to baseline"], rows)
    added = last["+ provider"]["added"]
    heavy = [m for m in added if m.split(".")[0] in HEAVY or m in HEAVY]
    base = best["baseline"]
    print(f"\nprovider imports alone (after the baseline, same process): best {best_extra * 1000:.1f} ms")
    print(f"ratio (baseline + provider imports) / baseline: {(base + best_extra) / base:.3f}")
    print(f"ratio of best totals, + provider / baseline: {best['+ provider'] / base:.3f}")
    if airflow3:
        sdk = best["+ SDK operator/sensor classes"]
        print(f"ratio of best totals, + provider / (baseline + SDK classes): {best['+ provider'] / sdk:.3f}")
    print(f"modules added by the provider's two imports ({len(added)}): {', '.join(added)}")
    print(f"heavy modules among them: {', '.join(heavy) or 'none'}")
    plugin_added = last["+ plugin"]["added"]
    plugin_heavy = [m for m in plugin_added if m.split(".")[0] in HEAVY + WEB or m in HEAVY + WEB]
    print(f"\nplugin module alone (after the baseline, same process): best {min(plugin_times) * 1000:.1f} ms")
    print(f"ratio (baseline + plugin import) / baseline: {(base + min(plugin_times)) / base:.3f}")
    print(f"ratio of best totals, + plugin / baseline: {best['+ plugin'] / base:.3f}")
    print(f"modules added by the plugin ({len(plugin_added)}): {', '.join(plugin_added)}")
    print(f"web frameworks or heavy modules among them: {', '.join(plugin_heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
