"""Concurrent runs in the real deployment: the README's recipe (one pool slot, require_credits in the paid task).

Two runs of one DAG at once, each needing 60 of 82 credits, on a Celery worker with two processes
(so both can run at the same time). The paid task checks with ``require_credits``, marks that it
has checked, gives the other run every chance to check too (it waits until a second run has
checked, at most ``HOLD_SECONDS``), then spends through the sandbox's spend control:

* in a pool with one slot (the recipe), the second run can only check after the first has spent:
  it sees 22 credits and skips before spending anything;
* without the pool (the control), both check while 82 are there, both pass, and the second spend
  is refused by the sandbox: the overspend the recipe prevents.

The proof is the sandbox's own history (one DEDUCTION per spend), the balance, and the task states.
Importable as ``deployment_planning``.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from deployment_airflow import Deployment

from airflow_provider_localleads.sandbox import BALANCE_PATH

POOL = "localleads_planning"
COST = 60
AVAILABLE = 82
#: How long a paid task that has checked waits for the other run to check too: in the pool it cannot,
#: so the pooled runs take this long; without the pool it returns as soon as both have checked
#: (the control's bound only needs to cover the second task's start on a busy machine).
HOLD_SECONDS = {"pooled": 20, "unpooled": 180}
DAGS = {"pooled": "deploy_planning_pooled", "unpooled": "deploy_planning_unpooled"}
RUNS = ("run_a", "run_b")
SPEND_PREFIX = "Lead search: concurrent "

PLANNING_DAG = """\
import pathlib
import time

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

START = pendulum.datetime(2024, 1, 1, tz="UTC")
BARRIERS = pathlib.Path({barriers!r})


def paid_work(dag_id, run_id, cost, hold):
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.sandbox import SandboxClient

    with LocalLeadsHook() as hook:
        hook.require_credits(cost, on_insufficient="skip")  # the recipe: check right before spending
        url = hook.settings.base_url
    barrier = BARRIERS / dag_id
    (barrier / (run_id + ".checked")).touch()
    # Give the other run every chance to check as well (it can only if nothing serializes the two).
    deadline = time.monotonic() + hold
    while len(list(barrier.glob("*.checked"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    return SandboxClient(url).spend(cost, {prefix!r} + dag_id + " " + run_id)


for dag_id, pool, hold in {dags!r}:
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, max_active_runs=2):

        @task(task_id="paid_work", retries=0, pool=pool)
        def run(dag_run=None, hold=hold):
            return paid_work(dag_run.dag_id, dag_run.run_id, int(dag_run.conf["cost"]), hold)

        run()
"""


@dataclass
class PlanningScenario:
    #: Per case ("pooled", "unpooled"): {run_id: (state, try_number)} of the paid task.
    states: dict[str, dict[str, tuple[str | None, int]]] = field(default_factory=dict)
    #: Per case: the DEDUCTION transactions the runs made (description -> amount), from the API's history.
    spends: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Per case: available credits after both runs.
    available_after: dict[str, int] = field(default_factory=dict)
    #: Per case: balance reads (one per check) during the two runs.
    balance_reads: dict[str, int] = field(default_factory=dict)
    #: Per case: the paid task's log, per run.
    logs: dict[str, dict[str, str]] = field(default_factory=dict)


def run_planning(d: Deployment) -> PlanningScenario:
    barriers = d.root / "planning-barriers"
    for dag_id in DAGS.values():
        (barriers / dag_id).mkdir(parents=True, exist_ok=True)
    d.api("POST", "/api/v2/pools", {"name": POOL, "slots": 1, "description": "LocalLeads paid tasks"})
    dags = [
        (DAGS["pooled"], POOL, HOLD_SECONDS["pooled"]),
        (DAGS["unpooled"], "default_pool", HOLD_SECONDS["unpooled"]),
    ]
    source = PLANNING_DAG.format(barriers=str(barriers), prefix=SPEND_PREFIX, dags=dags)
    d.write_dag("deploy_planning.py", source, list(DAGS.values()))
    s = PlanningScenario()
    for case, dag_id in DAGS.items():  # one pair after the other: each starts from 82 credits
        d.sandbox.set_balance(monthly=100, bonus=0, used=100 - AVAILABLE)
        reads_before = d.sandbox.request_count(BALANCE_PATH)
        for run_id in RUNS:
            d.trigger(dag_id, run_id, {"cost": COST})
        for run_id in RUNS:
            d.wait_for_run(dag_id, run_id)
        s.states[case] = {
            run_id: (ti.state, ti.try_number) for run_id in RUNS for ti in d.task_instances(dag_id, run_id).values()
        }
        s.balance_reads[case] = d.sandbox.request_count(BALANCE_PATH) - reads_before
        s.available_after[case] = int(d.sandbox.balance()["availableCredits"])
        s.spends[case] = {
            t["description"]: t["amount"]
            for t in _newest_transactions(d)
            if t["type"] == "DEDUCTION" and t["description"].startswith(SPEND_PREFIX + dag_id + " ")
        }
        s.logs[case] = {run_id: d.task_log(dag_id, run_id, "paid_work") for run_id in RUNS}
    return s


def _newest_transactions(d: Deployment, limit: int = 50) -> list[dict[str, Any]]:
    """The newest transactions as the API serves them (read with the deployment's key, never logged)."""
    request = urllib.request.Request(
        f"{d.sandbox.url}/api/v1/credits/transactions?limit={limit}&offset=0",
        headers={"Authorization": f"Bearer {d.api_key}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        body = json.loads(response.read())
    return list(body["data"])
