"""The DAG runs of the deployment test: each ``run_*`` drives one scenario and returns what it saw.

The tests assert on these observations; the figures (requests per poll interval, the triggerer
hand-over, blocked-loop warnings) are also printed at the end of the session (``FIGURES``), never
asserted against a clock. Importable as ``deployment_scenarios``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deployment_airflow import FINISHED, SLOW, Deployment, TaskInstance, wait_seconds
from deployment_services import wait_until

ROOT = Path(__file__).resolve().parents[2]
#: Printed in the terminal summary (see conftest.py).
FIGURES: list[str] = []

SENSORS = 50
STAGES = 5
STEP = 10  # credits per staged top-up; sensor i needs STEP * (i % STAGES + 1)
POLL = 10.0  # the deferrable sensors' poke_interval, so the triggerer's poll interval
KILL_AFTER_STAGE = 2

_HEADER = """\
import pendulum
from airflow.providers.common.compat.sdk import DAG

START = pendulum.datetime(2024, 1, 1, tz="UTC")
"""

SENSOR_DAG = (
    _HEADER
    + f"""
from airflow_provider_localleads.sensors.credits import CreditsSensor

with DAG("deploy_deferrable_sensors", schedule=None, start_date=START, catchup=False, max_active_tasks=128):
    for i in range({SENSORS}):
        CreditsSensor(
            task_id=f"wait_{{i:02d}}", estimated_cost={STEP} * (i % {STAGES} + 1),
            deferrable=True, poke_interval={POLL}, timeout=3600,
        )
"""
)

RESCHEDULE_COSTS = {"resched_0": 10, "resched_1": 10, "resched_2": 20, "resched_3": 20, "resched_4": 20}
RESCHEDULE_DAG = (
    _HEADER
    + f"""
from airflow_provider_localleads.sensors.credits import CreditsSensor

with DAG("deploy_reschedule_sensors", schedule=None, start_date=START, catchup=False):
    for task_id, cost in {RESCHEDULE_COSTS!r}.items():
        CreditsSensor(task_id=task_id, estimated_cost=cost, mode="reschedule", poke_interval=5, timeout=3600)
"""
)

CONTROL_DAG = (
    _HEADER
    + f"""
from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync

with DAG("deploy_control_time_sensors", schedule=None, start_date=START, catchup=False, max_active_tasks=128):
    for i in range({SENSORS}):
        DateTimeSensorAsync(task_id=f"time_{{i:02d}}", target_time="{{{{ dag_run.conf['until'] }}}}")
"""
)


def _since(moment: float) -> float:
    return time.monotonic() - moment


def _parse_at(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _log_offset(service: Any) -> int:
    return service.log.stat().st_size if service.log.exists() else 0


def _blocked_seconds(lines: list[str]) -> list[float]:
    return [float(m.group(1)) for line in lines if (m := re.search(r"blocked for ([0-9.]+)", line))]


def _summary(seconds: list[float]) -> str:
    if not seconds:
        return "0 warnings"
    return f"{len(seconds)} warnings, max {max(seconds):.2f} s, total {sum(seconds):.2f} s"


# ------------------------------------------------------------------------------------------------
# 50 deferrable sensors, staged top-ups, a triggerer killed and replaced
# ------------------------------------------------------------------------------------------------


@dataclass
class SensorScenario:
    dag_id: str
    run_id: str
    costs: dict[str, int]
    #: After top-up k (1-based): the tasks in success, and those not yet finished.
    succeeded_after: dict[int, set[str]] = field(default_factory=dict)
    unfinished_after: dict[int, set[str]] = field(default_factory=dict)
    final: dict[str, TaskInstance] = field(default_factory=dict)
    seconds_to_defer: float = 0.0
    #: Decrypted trigger kwargs seen while the sensors waited (before and after the restart).
    trigger_kwargs: list[str] = field(default_factory=list)
    triggers_before_kill: int = 0
    adopted_by_new_triggerer: int = 0
    seconds_to_adopt: float = 0.0
    #: Balance requests seen by the sandbox while only triggerers polled, as UNIX times.
    request_times: list[float] = field(default_factory=list)
    window: tuple[float, float, float] = (0.0, 0.0, 0.0)  # start, triggerer killed, end (UNIX times)
    blocked: list[float] = field(default_factory=list)
    #: Per task: what it logged on workers, and what its triggers logged in the triggerers.
    logs: dict[str, str] = field(default_factory=dict)
    trigger_logs: dict[str, str] = field(default_factory=dict)
    history_rows: int = 0

    def request_bound(self) -> int:
        """At most one request per poll interval per triggerer, for each triggerer's share of the window."""
        start, killed, end = self.window
        return int((killed - start) // POLL) + 1 + int((end - killed) // POLL) + 1


def run_sensors(d: Deployment) -> SensorScenario:
    dag_id = "deploy_deferrable_sensors"
    costs = {f"wait_{i:02d}": STEP * (i % STAGES + 1) for i in range(SENSORS)}
    s = SensorScenario(dag_id, "sensors", costs)
    d.sandbox.set_balance(monthly=0, bonus=0, used=0)
    d.write_dag("deploy_deferrable_sensors.py", SENSOR_DAG, [dag_id])
    offsets = {t.name: _log_offset(t) for t in d.triggerers}
    started = time.monotonic()
    d.trigger(dag_id, s.run_id)
    d.wait_for(dag_id, s.run_id, lambda st: list(st.values()).count("deferred") == SENSORS, "every sensor deferred")
    wait_until(
        lambda: len([r for r in d.trigger_rows() if r["triggerer_id"]]) == SENSORS, SLOW, "50 triggers picked up"
    )
    s.seconds_to_defer = _since(started)
    s.trigger_kwargs += [r["kwargs"] for r in d.trigger_rows()]

    # From here on only the triggerer asks for the balance: the workers' first checks are done.
    d.sandbox.reset_request_log()
    window_start = time.time()
    wait_seconds(2 * POLL)  # a quiet stretch: two poll intervals with 50 triggers waiting
    killed_at = 0.0
    for stage in range(1, STAGES + 1):
        d.sandbox.top_up(STEP, f"Bonus credits, stage {stage}")
        due = {t for t, c in costs.items() if c <= STEP * stage}
        states = d.wait_for(
            dag_id, s.run_id, lambda st, due=due: all(st[t] == "success" for t in due), f"stage {stage} sensors"
        )
        s.succeeded_after[stage] = {t for t, v in states.items() if v == "success"}
        s.unfinished_after[stage] = {t for t, v in states.items() if v not in FINISHED}
        if stage == KILL_AFTER_STAGE:
            killed_at = _hand_over(d, s)
    s.window = (window_start, killed_at, time.time())
    s.request_times = [_parse_at(r["at"]) for r in d.balance_requests()]
    d.wait_for_run(dag_id, s.run_id)
    s.final = d.task_instances(dag_id, s.run_id)
    s.logs = {task_id: d.task_log(dag_id, s.run_id, task_id) for task_id in costs}
    s.trigger_logs = {task_id: d.task_log(dag_id, s.run_id, task_id, trigger=True) for task_id in costs}
    s.history_rows = d.query(
        "SELECT count(*) FROM task_instance_history WHERE dag_id = %s AND run_id = %s", (dag_id, s.run_id)
    )[0][0]
    for triggerer in d.triggerers:
        s.blocked += _blocked_seconds(d.blocked_warnings(triggerer, offsets.get(triggerer.name, 0)))
    start, _killed, end = s.window
    FIGURES.append(
        f"LocalLeads: {SENSORS} deferrable sensors deferred in {s.seconds_to_defer:.0f} s; "
        f"{len(s.request_times)} balance requests in {end - start:.0f} s at a {POLL:g} s poll interval "
        f"(bound {s.request_bound()}: one per interval per triggerer); triggerer SIGKILLed after stage "
        f"{KILL_AFTER_STAGE}, the new one adopted {s.adopted_by_new_triggerer}/{s.triggers_before_kill} "
        f"triggers in {s.seconds_to_adopt:.0f} s"
    )
    FIGURES.append(f"LocalLeads sensors, triggerer 'async thread was blocked': {_summary(s.blocked)}")
    return s


def _hand_over(d: Deployment, s: SensorScenario) -> float:
    """SIGKILL the triggerer, start a new one, wait until it has adopted every waiting trigger."""
    s.triggers_before_kill = len(d.trigger_rows())
    old_jobs = {job_id for job_id, _ in d.triggerer_jobs()}
    d.kill_triggerer()
    killed_at = time.time()
    moment = time.monotonic()
    d.start_triggerer()

    def adopted() -> bool:
        new_jobs = {job_id for job_id, _ in d.triggerer_jobs()} - old_jobs
        rows = d.trigger_rows()
        return (
            bool(new_jobs) and len(rows) == s.triggers_before_kill and all(r["triggerer_id"] in new_jobs for r in rows)
        )

    wait_until(adopted, SLOW, f"the new triggerer to adopt the triggers\n{d.diagnostics()}", interval=1.0)
    s.seconds_to_adopt = _since(moment)
    rows = d.trigger_rows()
    s.adopted_by_new_triggerer = len(rows)
    s.trigger_kwargs += [r["kwargs"] for r in rows]
    return killed_at


# ------------------------------------------------------------------------------------------------
# 5 sensors in reschedule mode
# ------------------------------------------------------------------------------------------------


@dataclass
class RescheduleScenario:
    dag_id: str
    run_id: str
    before_top_up: dict[str, str | None] = field(default_factory=dict)
    succeeded_after_first: set[str] = field(default_factory=set)
    final: dict[str, TaskInstance] = field(default_factory=dict)
    reschedules: dict[str, int] = field(default_factory=dict)
    history_rows: int = 0


def run_reschedule(d: Deployment) -> RescheduleScenario:
    dag_id = "deploy_reschedule_sensors"
    s = RescheduleScenario(dag_id, "reschedule")
    d.sandbox.set_balance(monthly=0, bonus=0, used=0)
    d.write_dag("deploy_reschedule_sensors.py", RESCHEDULE_DAG, [dag_id])
    d.trigger(dag_id, s.run_id)
    s.before_top_up = d.wait_for(
        dag_id, s.run_id, lambda st: all(v == "up_for_reschedule" for v in st.values()), "every sensor rescheduled"
    )
    d.sandbox.top_up(10, "Bonus credits, stage 1")
    first = {t for t, c in RESCHEDULE_COSTS.items() if c <= 10}
    states = d.wait_for(dag_id, s.run_id, lambda st: all(st[t] == "success" for t in first), "the 10-credit sensors")
    s.succeeded_after_first = {t for t, v in states.items() if v == "success"}
    d.sandbox.top_up(10, "Bonus credits, stage 2")
    d.wait_for_run(dag_id, s.run_id)
    s.final = d.task_instances(dag_id, s.run_id)
    rows = d.query(
        "SELECT ti.task_id, count(tr.id) FROM task_instance ti LEFT JOIN task_reschedule tr ON tr.ti_id = ti.id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s GROUP BY ti.task_id",
        (dag_id, s.run_id),
    )
    s.reschedules = dict(rows)
    s.history_rows = d.query(
        "SELECT count(*) FROM task_instance_history WHERE dag_id = %s AND run_id = %s", (dag_id, s.run_id)
    )[0][0]
    return s


# ------------------------------------------------------------------------------------------------
# The pre-flight example: enough / skip / fail, in the scheduler and under dag.test()
# ------------------------------------------------------------------------------------------------

PREFLIGHT_EXAMPLE = ROOT / "example_dags" / "localleads_preflight.py"
#: case -> (dag_id, estimated_cost). The balance is 100 available before each case.
PREFLIGHT_CASES = {
    "enough": ("localleads_preflight", 30),
    "skip": ("localleads_preflight", 5000),
    "fail": ("localleads_preflight_fail", 5000),
}


def preflight_fail_variant() -> str:
    """The example with ``on_insufficient="fail"`` (what its comments suggest for alerting)."""
    source = PREFLIGHT_EXAMPLE.read_text()
    edits = [
        ('dag_id="localleads_preflight",', 'dag_id="localleads_preflight_fail",'),
        ('        on_insufficient="skip",\n', '        on_insufficient="fail",\n'),
    ]
    for old, new in edits:
        assert source.count(old) == 1, f"{PREFLIGHT_EXAMPLE.name} no longer contains {old!r} exactly once"
        source = source.replace(old, new)
    return source


@dataclass
class PreflightScenario:
    scheduler: dict[str, dict[str, tuple[str | None, int]]] = field(default_factory=dict)
    dag_test: dict[str, dict[str, tuple[str | None, int]]] = field(default_factory=dict)
    run_states: dict[str, str | None] = field(default_factory=dict)
    spent: int = 0


def run_preflight(d: Deployment) -> PreflightScenario:
    s = PreflightScenario()
    d.write_dag("localleads_preflight.py", PREFLIGHT_EXAMPLE.read_text(), ["localleads_preflight"])
    d.write_dag("localleads_preflight_fail.py", preflight_fail_variant(), ["localleads_preflight_fail"])
    # The three runs at once: only "enough" spends (30 of 100); the others need 5000.
    d.sandbox.set_balance(monthly=100, bonus=0, used=0)
    for case, (dag_id, cost) in PREFLIGHT_CASES.items():
        d.trigger(dag_id, f"preflight_{case}", {"estimated_cost": cost})
    for case, (dag_id, _) in PREFLIGHT_CASES.items():
        d.wait_for_run(dag_id, f"preflight_{case}")
        s.run_states[case] = d.dag_run_state(dag_id, f"preflight_{case}")
        tis = d.task_instances(dag_id, f"preflight_{case}")
        s.scheduler[case] = {t: (ti.state, ti.try_number) for t, ti in tis.items()}
    s.spent = 100 - d.sandbox.balance()["availableCredits"]
    s.dag_test = _dag_test_states(d)
    return s


def _dag_test_states(d: Deployment) -> dict[str, dict[str, tuple[str | None, int]]]:
    """The same cases under ``dag.test()`` in a fresh process with its own SQLite home (the same sandbox)."""
    import json
    import subprocess
    import sys

    script = Path(__file__).with_name("dag_test_states.py")
    cases = {case: [dag_id, cost] for case, (dag_id, cost) in PREFLIGHT_CASES.items()}
    files = {
        "localleads_preflight.py": PREFLIGHT_EXAMPLE.read_text(),
        "localleads_preflight_fail.py": preflight_fail_variant(),
    }
    env = d.dag_test_env(files)
    result = subprocess.run(
        [sys.executable, str(script), d.sandbox.url, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SLOW,
        check=False,
    )
    assert result.returncode == 0, f"dag.test() runs failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return {case: {t: (v[0], v[1]) for t, v in tis.items()} for case, tis in answer.items()}


# ------------------------------------------------------------------------------------------------
# The control: as many of Airflow's own deferrable time sensors
# ------------------------------------------------------------------------------------------------


@dataclass
class ControlScenario:
    final: dict[str, TaskInstance] = field(default_factory=dict)
    blocked: list[float] = field(default_factory=list)


def run_control(d: Deployment, sensors: SensorScenario) -> ControlScenario:
    dag_id = "deploy_control_time_sensors"
    s = ControlScenario()
    d.write_dag("deploy_control_time_sensors.py", CONTROL_DAG, [dag_id])
    triggerer = next(t for t in reversed(d.triggerers) if t.running())
    offset = _log_offset(triggerer)
    # They all fire together about when the last one has deferred (as long as the LocalLeads sensors
    # took to defer, and a little more); one that defers later fires at once, which is fine here.
    until = datetime.now(UTC) + timedelta(seconds=sensors.seconds_to_defer + 15)
    d.trigger(dag_id, "control", {"until": until.isoformat()})
    d.wait_for_run(dag_id, "control", timeout=SLOW + 2 * sensors.seconds_to_defer)
    s.final = d.task_instances(dag_id, "control")
    s.blocked = _blocked_seconds(d.blocked_warnings(triggerer, offset))
    FIGURES.append(
        f"Control, {SENSORS} DateTimeSensorAsync (standard provider), triggerer 'async thread was blocked': "
        f"{_summary(s.blocked)}"
    )
    return s
