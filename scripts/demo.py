#!/usr/bin/env python3
"""The LocalLeads provider demo: real Airflow DAG runs against the bundled sandbox API.

What ``python3 dev.py demo`` runs (or ``.venv/bin/python scripts/demo.py`` with Airflow installed):

1. starts the LocalLeads sandbox (a real HTTP server on 127.0.0.1, in this process);
2. creates a private Airflow home in ``.demo/airflow-home`` (recreated each run) whose
   ``localleads_default`` connection points at the sandbox, and runs ``airflow db migrate``;
3. runs the example DAGs with ``airflow dags test`` (one process per run, as you would by hand),
   each run's full output in ``.demo/logs/<name>.log``:

   * ``localleads_preflight`` with enough credits: check, search (spends), report;
   * ``localleads_preflight`` with far too few: the check short-circuits, the rest is skipped;
   * ``localleads_paid_search`` with far too few: the paid task's own check fails it, nothing spent;
   * ``localleads_preflight`` with a wrong API key: the check fails at once, without retrying;
   * ``localleads_wait_for_credits``: the deferrable sensor waits until the demo tops the sandbox up;
   * ``localleads_credit_audit``: summarises the whole credit history;

4. prints each run's task states and the balance before/after, then the latest transactions as
   ``LocalLeadsHook`` reads them.

The exit status is non-zero if any run's outcome is not the expected one, so this doubles as an
end-to-end smoke test. No LocalLeads account and no network beyond loopback are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / ".demo"
AIRFLOW_HOME = DEMO_DIR / "airflow-home"
LOG_DIR = DEMO_DIR / "logs"
DAGS_FOLDER = ROOT / "example_dags"

# Seconds between the wait-for-credits sensor's balance checks in the demo (the DAG's default is 300).
DEMO_POKE_INTERVAL = "1"
# How many balance checks the sensor must have made before the demo tops the sandbox up: the first
# on the "worker", then polls from the trigger. Proof that it really waited.
CHECKS_BEFORE_TOP_UP = 3
TOP_UP_AMOUNT = 200
# A run that takes longer than this is stuck: stop it and report a failure instead of hanging.
RUN_TIMEOUT_SECONDS = 240.0

_COLOR = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def _style(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _COLOR else text


def bold(text: str) -> str:
    return _style(text, "1")


def green(text: str) -> str:
    return _style(text, "32")


def red(text: str) -> str:
    return _style(text, "31")


def dim(text: str) -> str:
    return _style(text, "2")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def say(text: str = "") -> None:
    print(text, flush=True)


def _airflow_major() -> int:
    """Airflow's major version from the installed distribution's metadata, without importing Airflow."""
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


# --------------------------------------------------------------------------------------------------
# Environment: everything Airflow reads must be set before Airflow is first imported.
# --------------------------------------------------------------------------------------------------


def prepare_environment(connection_json: str) -> dict[str, str]:
    """Point this process (and every ``airflow`` subprocess) at the private demo Airflow home.

    Returns the environment for the ``airflow`` subprocesses: the same, but with INFO task logs,
    since their output goes to the log files where the details are worth having.
    """
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    AIRFLOW_HOME.mkdir(parents=True)
    LOG_DIR.mkdir(parents=True)
    for name in list(os.environ):
        # Never let a developer's real settings or key leak into the demo.
        if name.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) or name in ("LOCALLEADS_API_KEY", "AIRFLOW_CONFIG"):
            os.environ.pop(name)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(AIRFLOW_HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
            "AIRFLOW_CONN_LOCALLEADS_DEFAULT": connection_json,
            # Read by example_dags/localleads_wait_for_credits.py when the DAG file is parsed.
            "LOCALLEADS_EXAMPLE_POKE_INTERVAL": DEMO_POKE_INTERVAL,
            # This process only reads the database and calls the hook: keep its console quiet.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    if _airflow_major() < 3:
        # Airflow 2.11 warns about the old metrics timer unit on every start; 3.x has only the new one.
        os.environ["AIRFLOW__METRICS__TIMER_UNIT_CONSISTENCY"] = "True"
    return {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}


# --------------------------------------------------------------------------------------------------
# Running airflow commands
# --------------------------------------------------------------------------------------------------


def run_airflow(args: list[str], log_file: Path, env: dict[str, str], timeout: float) -> tuple[int | None, float]:
    """``airflow <args>`` in its own process group, all output to ``log_file``.

    Returns (exit code or None on timeout, seconds). A process still running at ``timeout`` is
    stopped (its whole process group: ``dags test`` runs tasks in child processes).
    """
    cmd = [sys.executable, "-m", "airflow", *args]
    started = time.monotonic()
    with log_file.open("w") as out:
        out.write(f"$ airflow {' '.join(args)}\n\n")
        out.flush()
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code = None
        except BaseException:  # Ctrl-C: do not leave an airflow process behind
            _stop_group(proc)
            raise
    return code, time.monotonic() - started


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("      | " + line[:160] for line in text)


# --------------------------------------------------------------------------------------------------
# Reading what a run left behind (the metadata database, through Airflow's own models)
# --------------------------------------------------------------------------------------------------


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


@dataclass
class RunRecord:
    run_id: str
    state: str
    tasks: dict[str, str]
    xcoms: dict[str, Any]


def latest_new_run(dag_id: str, seen: set[str], xcom_tasks: tuple[str, ...] = ()) -> RunRecord | None:
    """The run of ``dag_id`` that ``airflow dags test`` just made: the one not in ``seen``.

    Read in this process with ``DagRun.find()``/``get_task_instances()`` (public on Airflow 2.11 and
    3.x): one Airflow import for the whole demo, instead of a 5-second ``airflow tasks
    states-for-dag-run`` process after every run.
    """
    from airflow.models.dagrun import DagRun

    runs = [r for r in DagRun.find(dag_id=dag_id) if r.run_id not in seen]
    if not runs:
        return None
    run = max(runs, key=lambda r: r.id)
    seen.add(run.run_id)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    xcoms: dict[str, Any] = {}
    for task_id in xcom_tasks:
        if task_id in tis:
            xcoms[task_id] = tis[task_id].xcom_pull(task_ids=task_id)
    return RunRecord(run.run_id, _state(run.state), {t: _state(ti.state) for t, ti in tis.items()}, xcoms)


# --------------------------------------------------------------------------------------------------
# The scenarios
# --------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    dag_id: str
    conf: dict[str, Any]
    story: str
    expected_tasks: dict[str, str]
    expected_change: int
    #: Task ids whose XCom the outcome check reads.
    xcom_tasks: tuple[str, ...] = ()
    #: Extra checks: (run record, details) -> list of problems.
    checks: list[Callable[[RunRecord, dict[str, Any]], list[str]]] = field(default_factory=list)
    #: The DAG run's expected end state (a failed run is the point of some scenarios).
    expected_run: str = "success"
    #: Environment for this run only (e.g. a connection with a wrong key).
    env: dict[str, str] = field(default_factory=dict)
    #: Text of the log line to show: what a person on call would read.
    shows: str | None = None


@contextmanager
def top_up_once_waiting(sandbox: Any, details: dict[str, Any]) -> Iterator[None]:
    """In a background thread: once the sensor has checked the balance a few times (so it is
    provably waiting), top the sandbox up, as a person buying credits would."""
    from airflow_provider_localleads.sandbox import BALANCE_PATH

    stop = threading.Event()
    baseline = sandbox.request_count(BALANCE_PATH)

    def watch() -> None:
        first_check: float | None = None
        while not stop.wait(0.05):
            checks = sandbox.request_count(BALANCE_PATH) - baseline
            if checks and first_check is None:
                first_check = time.monotonic()
            if first_check is not None and checks >= CHECKS_BEFORE_TOP_UP:
                sandbox.top_up(TOP_UP_AMOUNT, "Bonus credits: demo top-up")
                details["checks_before_top_up"] = checks
                details["waited_before_top_up"] = time.monotonic() - first_check
                return

    thread = threading.Thread(target=watch, name="demo-top-up", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        details["checks_total"] = sandbox.request_count(BALANCE_PATH) - baseline


def _check_waited(record: RunRecord, details: dict[str, Any]) -> list[str]:
    if "checks_before_top_up" not in details:
        return ["the sensor never waited (the demo's top-up did not happen while it was waiting)"]
    return []


def _check_preflight_xcom(record: RunRecord, details: dict[str, Any]) -> list[str]:
    balance = record.xcoms.get("check_credits")
    if not isinstance(balance, dict) or balance.get("available_credits") != details["before"]:
        return [f"check_credits' XCom should hold the balance before the run, got {balance!r}"]
    return []


def _check_audit(record: RunRecord, details: dict[str, Any]) -> list[str]:
    summary = record.xcoms.get("summarise_transactions")
    if not isinstance(summary, dict):
        return [f"summarise_transactions returned no summary, got {summary!r}"]
    details["summary"] = summary
    if summary.get("transactions") != details["transaction_count"]:
        return [
            f"the audit counted {summary.get('transactions')} transactions, the sandbox holds "
            f"{details['transaction_count']}"
        ]
    return []


def _wrong_key(connection_json: str) -> str:
    return json.dumps({**json.loads(connection_json), "password": "not-the-sandbox-key"})


def build_scenarios(available: int, connection_json: str) -> list[Scenario]:
    short_cost = 5000
    wait_cost = TOP_UP_AMOUNT
    after_first = available - 30
    return [
        Scenario(
            name="preflight-enough",
            dag_id="localleads_preflight",
            conf={"estimated_cost": 30},
            story=f"needs 30 credits, {available} available: the search runs and spends them",
            expected_tasks={"check_credits": "success", "run_lead_search": "success", "report": "success"},
            expected_change=-30,
            xcom_tasks=("check_credits",),
            checks=[_check_preflight_xcom],
        ),
        Scenario(
            name="preflight-short",
            dag_id="localleads_preflight",
            conf={"estimated_cost": short_cost},
            story=f"needs {short_cost} credits, {after_first} available: the check short-circuits the run",
            expected_tasks={"check_credits": "success", "run_lead_search": "skipped", "report": "skipped"},
            expected_change=0,
            xcom_tasks=("check_credits",),
            checks=[_check_preflight_xcom],
        ),
        Scenario(
            name="paid-search-short",
            dag_id="localleads_paid_search",
            conf={"estimated_cost": short_cost},
            story=f"the paid task checks for itself: needs {short_cost}, {after_first} available: it fails unspent",
            expected_tasks={"run_lead_search": "failed"},
            expected_change=0,
            expected_run="failed",
            shows="Not enough LocalLeads credits",
        ),
        Scenario(
            name="wrong-key",
            dag_id="localleads_preflight",
            conf={"estimated_cost": 30},
            story="the connection holds a wrong API key: the check fails at once, without retrying",
            expected_tasks={
                "check_credits": "failed",
                "run_lead_search": "upstream_failed",
                "report": "upstream_failed",
            },
            expected_change=0,
            expected_run="failed",
            env={"AIRFLOW_CONN_LOCALLEADS_DEFAULT": _wrong_key(connection_json)},
            shows="The LocalLeads API refused the API key",
        ),
        Scenario(
            name="wait-for-credits",
            dag_id="localleads_wait_for_credits",
            conf={"estimated_cost": wait_cost},
            story=(
                f"needs {wait_cost} credits, {after_first} available: the deferrable sensor waits; "
                f"the demo tops up {TOP_UP_AMOUNT} while it does"
            ),
            expected_tasks={"wait_for_credits": "success", "start_paid_work": "success"},
            expected_change=TOP_UP_AMOUNT,
            checks=[_check_waited],
        ),
        Scenario(
            name="credit-audit",
            dag_id="localleads_credit_audit",
            conf={},
            story="streams the whole credit history and summarises it",
            expected_tasks={"summarise_transactions": "success", "log_report": "success"},
            expected_change=0,
            xcom_tasks=("summarise_transactions",),
            checks=[_check_audit],
        ),
    ]


def run_scenario(index: int, total: int, scenario: Scenario, sandbox: Any, env: dict[str, str], seen: set[str]) -> bool:
    conf_json = json.dumps(scenario.conf)
    say(bold(f"[{index}/{total}] {scenario.dag_id}") + f"  conf {conf_json}")
    say(dim(f"      {scenario.story}"))
    log_file = LOG_DIR / f"{scenario.name}.log"
    args = ["dags", "test", scenario.dag_id, "-c", conf_json]
    details: dict[str, Any] = {"before": sandbox.state.available_credits}

    env = {**env, **scenario.env}
    if scenario.name == "wait-for-credits":
        with top_up_once_waiting(sandbox, details):
            code, elapsed = run_airflow(args, log_file, env, RUN_TIMEOUT_SECONDS)
    else:
        code, elapsed = run_airflow(args, log_file, env, RUN_TIMEOUT_SECONDS)
    details["after"] = sandbox.state.available_credits
    details["transaction_count"] = sandbox.state.transaction_count

    problems: list[str] = []
    if code is None:
        problems.append(f"`airflow dags test` did not finish within {RUN_TIMEOUT_SECONDS:.0f} s (stopped)")
    elif code != 0 and scenario.expected_run == "success":
        problems.append(f"`airflow dags test` exited with status {code}")
    record = latest_new_run(scenario.dag_id, seen, scenario.xcom_tasks)
    if record is None:
        problems.append("no DAG run was recorded")
    else:
        width = max(len(t) for t in scenario.expected_tasks)
        for task_id, expected in scenario.expected_tasks.items():
            actual = record.tasks.get(task_id, "missing")
            mark = green("ok") if actual == expected else red(f"expected {expected}")
            say(f"      {task_id:<{width}}  {actual:<8}  {mark}")
            if actual != expected:
                problems.append(f"task {task_id} is {actual}, expected {expected}")
        if record.state != scenario.expected_run:
            problems.append(f"the DAG run is {record.state}, expected {scenario.expected_run}")
        for check in scenario.checks:
            problems += check(record, details)

    change = details["after"] - details["before"]
    if change != scenario.expected_change:
        problems.append(f"the balance changed by {change:+d}, expected {scenario.expected_change:+d}")
    run_state = record.state if record else "not found"
    say(f"      credits {details['before']} -> {details['after']} ({change:+d})   DAG run {run_state}")
    if "checks_before_top_up" in details:
        say(
            f"      the sensor found too few credits and deferred; after {details['checks_before_top_up']} "
            f"balance checks in {details['waited_before_top_up']:.1f} s the demo topped up {TOP_UP_AMOUNT}; "
            f"the trigger's next check saw it ({details['checks_total']} checks in all)"
        )
    if "summary" in details:
        summary = details["summary"]
        per_type = ", ".join(f"{k} {v['count']}x {v['total']:+d}" for k, v in summary["per_type"].items())
        biggest = summary["biggest_deductions"][0] if summary["biggest_deductions"] else None
        say(f"      {summary['transactions']} transactions: {per_type}")
        say(
            f"      spent in the last {summary['recent_days']} days: {summary['spent_recent']}"
            + (f"; biggest deduction: {biggest['amount']} ({biggest['description']})" if biggest else "")
        )
    if scenario.shows is not None:
        line = _log_line(log_file, scenario.shows)
        if line is None:
            problems.append(f"the log does not say {scenario.shows!r}")
        else:
            say(f"      the task said: {line}")
    verdict = green("as expected") if not problems else red("NOT as expected")
    say(f"      {verdict}  ({elapsed:.1f} s, log: {rel(log_file)})")
    for problem in problems:
        say(red(f"      - {problem}"))
    if problems:
        say(tail(log_file))
    say()
    return not problems


def _log_line(path: Path, text: str, limit: int = 330) -> str | None:
    """The first mention of ``text`` in a run's log, from there to the end of its line (cut to ``limit``)."""
    for line in path.read_text(errors="replace").splitlines():
        start = line.find(text)
        if start != -1:
            found = line[start:].strip()
            return found if len(found) <= limit else found[: limit - 3] + "..."
    return None


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def show_latest_transactions(limit: int = 5) -> None:
    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

    with LocalLeadsHook() as hook:
        page = hook.list_transactions(limit=limit)
        balance = hook.get_balance()
    say(bold(f"Latest {len(page.items)} of {page.total} transactions") + " (read with LocalLeadsHook)")
    for txn in page.items:
        when = txn.created_at.strftime("%Y-%m-%d %H:%M:%S")
        say(f"      {when}  {txn.type:<13} {txn.amount:>+6}  {txn.description}")
    say(f"      balance now: {balance.summary()}")
    say()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 dev.py demo",
        description="Run the example DAGs against a local LocalLeads sandbox (no account, no internet).",
    )
    parser.parse_args(argv)
    demo_started = time.monotonic()

    # The sandbox is standard library only: starting it does not import Airflow.
    from airflow_provider_localleads.sandbox import SandboxServer

    with SandboxServer(host="127.0.0.1", port=0) as sandbox:
        env = prepare_environment(sandbox.connection_json())
        say(bold("LocalLeads provider demo"))
        say(f"      sandbox API   {sandbox.url}  ({sandbox.state.available_credits} credits available)")
        say(f"      Airflow home  {rel(AIRFLOW_HOME)}  (recreated for each demo)")
        say()

        say("Creating Airflow's metadata database (airflow db migrate) ...")
        migrate_log = LOG_DIR / "db-migrate.log"
        code, elapsed = run_airflow(["db", "migrate"], migrate_log, env, RUN_TIMEOUT_SECONDS)
        if code != 0:
            say(red(f"      airflow db migrate failed (status {code}); see {rel(migrate_log)}"))
            say(tail(migrate_log))
            return 1
        say(f"      done in {elapsed:.1f} s")
        say()

        scenarios = build_scenarios(sandbox.state.available_credits, sandbox.connection_json())
        seen: set[str] = set()
        results = [
            run_scenario(i, len(scenarios), scenario, sandbox, env, seen)
            for i, scenario in enumerate(scenarios, start=1)
        ]
        show_latest_transactions()

    passed = sum(results)
    total_time = time.monotonic() - demo_started
    say(f"Logs: {rel(LOG_DIR)}/ (one file per run)   Airflow home: {rel(AIRFLOW_HOME)}")
    if passed == len(results):
        say(green(bold(f"All {len(results)} runs behaved as expected")) + f" ({total_time:.0f} s)")
        return 0
    failed = len(results) - passed
    say(red(bold(f"{failed} of {len(results)} runs did NOT behave as expected")) + f" ({total_time:.0f} s)")
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
