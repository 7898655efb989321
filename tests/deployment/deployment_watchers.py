"""The credit-watcher scenario of the deployment test: a monthly reset schedules the watching DAG once.

A DAG scheduled on an asset whose watcher is a ``CreditsResetTrigger``. After the triggerer has taken
its baseline, the sandbox runs the monthly reset: exactly one asset event and one DAG run must follow,
and nothing more while the (unchanged) reset is polled again and again. Then the triggerer is killed
with SIGKILL and a new one started: it adopts the watcher (3.3: resumes from the asset state store;
3.2: a new baseline) and schedules nothing more. Importable as ``deployment_watchers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from deployment_airflow import SLOW, Deployment, wait_seconds
from deployment_scenarios import FIGURES
from deployment_services import wait_until

DAG_ID = "deploy_watch_reset"
ASSET = "deploy_credits_reset"
WATCHER_CLASSPATH = "airflow_provider_localleads.triggers.events.CreditsResetTrigger"
POLL = 5.0
#: Polls to watch for anything more after the event and after the restart (a repeat would show by then).
QUIET_POLLS = 4

WATCHER_DAG = f"""
import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_localleads.triggers.events import CreditsResetTrigger

RESET = Asset("{ASSET}", watchers=[AssetWatcher(name="reset", trigger=CreditsResetTrigger(poll_interval={POLL}))])

with DAG("{DAG_ID}", schedule=[RESET], start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):

    @task
    def refresh(triggering_asset_events=None):
        payloads = [e.extra["payload"] for e in (triggering_asset_events or {{}}).get(RESET, [])]
        print("LOCALLEADS-PAYLOADS " + repr(payloads))
        return payloads

    refresh()
"""


@dataclass
class WatcherScenario:
    trigger_rows_before: list[dict[str, Any]] = field(default_factory=list)
    reset: dict[str, Any] = field(default_factory=dict)
    runs_after_reset: list[tuple[str, str, str]] = field(default_factory=list)  # (run_id, run_type, state)
    events_after_reset: list[dict[str, Any]] = field(default_factory=list)
    payload_xcom: Any = None
    runs_after_restart: list[tuple[str, str, str]] = field(default_factory=list)
    events_after_restart: list[dict[str, Any]] = field(default_factory=list)
    adopted_by_new_triggerer: bool = False
    log_lines: dict[str, list[str]] = field(default_factory=dict)  # triggerer name -> its watcher lines


def _runs(d: Deployment) -> list[tuple[str, str, str]]:
    rows = d.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = %s ORDER BY id", (DAG_ID,))
    return [tuple(r) for r in rows]


def _asset_events(d: Deployment) -> list[dict[str, Any]]:
    rows = d.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = %s ORDER BY e.id",
        (ASSET,),
    )
    return [r[0] if isinstance(r[0], dict) else json.loads(r[0]) for r in rows]


def _watcher_rows(d: Deployment) -> list[dict[str, Any]]:
    return [r for r in d.trigger_rows() if r["classpath"] == WATCHER_CLASSPATH]


def _watcher_lines(service: Any) -> list[str]:
    text = service.log.read_text(errors="replace")
    return [line.strip() for line in text.splitlines() if "LocalLeads reset watcher" in line or "Trigger fired" in line]


def run_watchers(d: Deployment) -> WatcherScenario:
    s = WatcherScenario()
    d.sandbox.set_balance(monthly=100, bonus=25, used=43)
    d.write_dag("deploy_watch_reset.py", WATCHER_DAG, [DAG_ID])
    triggerer = next(t for t in reversed(d.triggerers) if t.running())
    wait_until(lambda: [r for r in _watcher_rows(d) if r["triggerer_id"]], SLOW, "the watcher picked up")
    s.trigger_rows_before = _watcher_rows(d)
    wait_until(lambda: any("baseline" in line for line in _watcher_lines(triggerer)), SLOW, "the watcher's baseline")
    assert _runs(d) == [], "nothing may be scheduled before the reset"

    s.reset = d.sandbox.reset_month()
    wait_until(lambda: [r for r in _runs(d) if r[2] in ("success", "failed")], SLOW, "the run started by the reset")
    wait_seconds(QUIET_POLLS * POLL)  # the same lastResetAt, polled again: nothing more may happen
    s.runs_after_reset = _runs(d)
    s.events_after_reset = _asset_events(d)
    if s.runs_after_reset:
        rows = d.query(
            "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = 'refresh'",
            (DAG_ID, s.runs_after_reset[0][0]),
        )
        s.payload_xcom = rows[0][0] if rows else None

    old_jobs = {job_id for job_id, _ in d.triggerer_jobs()}
    d.kill_triggerer()
    new = d.start_triggerer()

    def adopted() -> bool:
        new_jobs = {job_id for job_id, _ in d.triggerer_jobs()} - old_jobs
        return bool(new_jobs) and all(r["triggerer_id"] in new_jobs for r in _watcher_rows(d))

    wait_until(adopted, SLOW, f"the new triggerer to adopt the watcher\n{d.diagnostics()}", interval=1.0)
    s.adopted_by_new_triggerer = True
    wait_until(
        lambda: any("baseline" in line or "resuming" in line for line in _watcher_lines(new)),
        SLOW,
        "the new triggerer's first observation",
    )
    wait_seconds(QUIET_POLLS * POLL)
    s.runs_after_restart = _runs(d)
    s.events_after_restart = _asset_events(d)
    # The watcher's triggerer, then the new one (not those an earlier scenario of the session killed).
    s.log_lines = {t.name: _watcher_lines(t) for t in (triggerer, new)}
    FIGURES.append(
        f"LocalLeads watcher: reset -> {len(s.events_after_reset)} asset event(s), "
        f"{len(s.runs_after_reset)} DAG run(s) {s.runs_after_reset}; after SIGKILL + a new triggerer: "
        f"{len(s.events_after_restart)} event(s), {len(s.runs_after_restart)} run(s)"
    )
    for name, lines in s.log_lines.items():
        FIGURES.extend(f"  {name}: {line[:300]}" for line in lines)
    return s
