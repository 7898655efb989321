"""Real DAG runs against the sandbox: database set-up, running a DAG, reading what it left behind.

Everything that differs between Airflow 2.11 and 3.x for these tests is in this file, behind
``_airflow_v3()``, so the test modules themselves are version-neutral (checked on every tested line):

* **Running a DAG built inside a test.** On 3.x ``dag.test()`` only runs DAGs that are serialized
  in the metadata database, so :func:`_run_dag` first writes it with
  ``airflow.dag_processing.dagbag.DagBag().bag_dag(dag)`` + ``sync_bag_to_db(bag, "dags-folder",
  None)`` (after registering the bundle row; 3.0 and 3.1 keep these in ``airflow.models.dagbag``).
  3.x's ``dag.test()`` also re-parses the whole ``dags-folder`` bundle on every call; for these
  tests that bundle is pointed at an empty directory (only while ``run_dag`` runs) so the example
  DAGs written by others are neither parsed over and over nor able to break these runs. On 2.11
  ``dag.test()`` takes the DAG as is.
* **Reading results** (task states, try numbers, XComs, rendered fields) goes through model APIs
  that exist on both lines: ``DagRun.get_task_instances()``, ``TaskInstance.xcom_pull()`` and
  ``RenderedTaskInstanceFields.get_templated_fields()``. Reschedule records are keyed by the task
  instance's id on 3.x and by (dag_id, task_id, run_id) on 2.11 (``reschedule_count``).
* **Why a task failed**: ``dag.test()`` only logs the exception. Tests hang a recorder on
  ``on_failure_callback``/``on_retry_callback`` (it runs in-process under ``dag.test()`` on every
  line) and get the exception object itself, with its type and message (on 3.0-3.2 ``dag.test()``
  leaves it out of the callback's context: :func:`_dag_test_as_on_3_3` puts it there).
* **What was logged**: 3.x task/trigger logs are structlog lines on stdout, 2.11's go through stdlib
  logging; ``task_log`` reads both.
* **The metadata database**: ``airflow.utils.db.initdb()`` in-process once per session (what
  ``airflow db migrate`` does on an empty database, without a second interpreter start).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from log_capture import captured_task_logs

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxServer

CONN_ID = "localleads_default"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
#: An empty directory used as the ``dags-folder`` bundle while a test DAG runs (Airflow 3.x only).
_EMPTY_DAGS_FOLDER = tempfile.mkdtemp(prefix="localleads-dagrun-empty-bundle-")


def _airflow_v3() -> bool:
    from airflow import __version__
    from packaging.version import Version

    return Version(Version(__version__).base_version) >= Version("3.0.0")


# --------------------------------------------------------------------------------------------------
# Session set-up
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create the (fresh, per-session SQLite) metadata database once (``airflow db migrate``), then
    run one trivial DAG: the first ``dag.test()`` of a process pays seconds of start-up (on 3.x the
    in-process execution API), which would otherwise distort the first test's timings."""
    from airflow.providers.common.compat.sdk import DAG, BaseOperator
    from airflow.utils.db import initdb

    initdb()

    class WarmUp(BaseOperator):
        def execute(self, context: Any) -> None:
            return None

    with DAG("localleads_dagrun_warm_up", schedule=None, start_date=START_DATE, catchup=False) as dag:
        WarmUp(task_id="warm_up")
    assert _run_dag(dag) == {"warm_up": "success"}


# --------------------------------------------------------------------------------------------------
# Running a DAG
# --------------------------------------------------------------------------------------------------


class DagRunResult(dict[str, str]):
    """``{task_id: state}`` of a finished run, plus the DagRun, task instances and their XComs."""

    def __init__(self, dag_run: Any, elapsed: float) -> None:
        self.dag_run = dag_run
        self.elapsed = elapsed
        self.all_tis = sorted(dag_run.get_task_instances(), key=lambda ti: (ti.task_id, ti.map_index))
        self.tis = {ti.task_id: ti for ti in self.all_tis}
        super().__init__({task_id: _state(ti.state) for task_id, ti in self.tis.items()})

    @property
    def state(self) -> str:
        return _state(self.dag_run.state)

    def try_number(self, task_id: str) -> int:
        return int(self.tis[task_id].try_number)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        """The task's XCom; for a mapped task the list of every map index's value, in map-index order.

        Mapped values are pulled one map index at a time: Airflow 3.1's ``TaskInstance.xcom_pull`` of
        several values at once calls ``Query.with_entities`` on a 2.0-style ``Select`` and raises
        ``AttributeError: 'Select' object has no attribute 'with_entities'`` (fixed in 3.2).
        """
        mapped = [ti for ti in self.all_tis if ti.task_id == task_id and ti.map_index >= 0]
        if not mapped:
            return self.tis[task_id].xcom_pull(task_ids=task_id, key=key)
        return [ti.xcom_pull(task_ids=task_id, key=key, map_indexes=ti.map_index) for ti in mapped]

    def rendered_fields(self, task_id: str) -> dict[str, Any] | None:
        from airflow.models.renderedtifields import RenderedTaskInstanceFields

        return RenderedTaskInstanceFields.get_templated_fields(self.tis[task_id])  # type: ignore[no-any-return]

    def reschedule_count(self, task_id: str) -> int:
        """How often ``task_id`` was rescheduled (``mode="reschedule"``) in this run."""
        from airflow.models.taskreschedule import TaskReschedule
        from airflow.utils.session import create_session
        from sqlalchemy import func, select

        ti = self.tis[task_id]
        if _airflow_v3():  # 3.x keys reschedules by the task instance's id
            where = [TaskReschedule.ti_id == ti.id]
        else:
            where = [
                TaskReschedule.dag_id == ti.dag_id,
                TaskReschedule.task_id == ti.task_id,
                TaskReschedule.run_id == ti.run_id,
            ]
        with create_session() as session:
            return int(session.scalar(select(func.count()).select_from(TaskReschedule).where(*where)) or 0)


def _state(value: Any) -> str:
    """TaskInstanceState/DagRunState enum or plain string (or None) as a plain string."""
    return str(getattr(value, "value", value))


@contextlib.contextmanager
def _private_dags_folder_bundle() -> Iterator[None]:
    """Airflow 3.x: point the ``dags-folder`` bundle at an empty directory while a test DAG runs."""
    name = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
    old = os.environ.get(name)
    os.environ[name] = json.dumps(
        [
            {
                "name": "dags-folder",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": _EMPTY_DAGS_FOLDER},
            }
        ]
    )
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _sync_bag_to_db(dag: Any) -> None:
    """Airflow 3.x: store ``dag`` serialized, in the ``dags-folder`` bundle, where each line keeps the tools.

    3.2+: ``airflow.dag_processing.dagbag.sync_bag_to_db``; 3.1: the same function in
    ``airflow.models.dagbag``; 3.0: the ``DagBag.sync_to_db`` method there.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow 3.0 and 3.1
        from airflow.models.dagbag import DagBag

        try:
            from airflow.models.dagbag import sync_bag_to_db
        except ImportError:  # Airflow 3.0

            def sync_bag_to_db(bag: Any, bundle_name: str, bundle_version: str | None) -> None:
                bag.sync_to_db(bundle_name, bundle_version)

    DagBundlesManager().sync_bundles_to_db()
    if getattr(dag, "relative_fileloc", "") is None:
        # 3.0: only DagBag.process_file sets it (the file's path, no bundle path given); its
        # sync_to_db then fails with "'LazyDeserializedDAG' object has no attribute 'relative_fileloc'".
        dag.relative_fileloc = dag.fileloc
    bag = DagBag(dag_folder=_EMPTY_DAGS_FOLDER, collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


@contextlib.contextmanager
def _dag_test_as_on_3_3() -> Iterator[None]:
    """Airflow 3.0-3.2: two steps 3.3's in-process ``dag.test()`` takes and theirs does not.

    * The failure/retry callbacks get the exception in ``context["exception"]`` (a worker's task
      runner sets it before ``finalize()`` runs them; 3.3's ``dag.test()`` does too), so
      :class:`FailureRecorder` sees it on every line.
    * One in-process execution API per process (3.3: ``lru_cache`` on
      ``supervisor.in_process_api_server``) instead of a new FastAPI app per task, 4-5 s each.
    * 3.0 only: :func:`_in_process_comms_as_on_3_1`.
    """
    from airflow import __version__
    from packaging.version import Version

    airflow = Version(Version(__version__).base_version)
    if airflow >= Version("3.3.0"):
        yield
        return
    from airflow.sdk.execution_time import supervisor, task_runner

    original_finalize, original_api = task_runner.finalize, supervisor.in_process_api_server

    def finalize(ti: Any, state: Any, context: Any, log: Any, error: BaseException | None = None) -> Any:
        context["exception"] = error
        return original_finalize(ti, state, context, log, error)

    # Both looked up at call time by the in-process supervisor.
    task_runner.finalize = finalize
    supervisor.in_process_api_server = _cached_api_server(original_api)
    try:
        with _in_process_comms_as_on_3_1() if airflow < Version("3.1.0") else contextlib.nullcontext():
            yield
    finally:
        task_runner.finalize, supervisor.in_process_api_server = original_finalize, original_api


@contextlib.contextmanager
def _in_process_comms_as_on_3_1() -> Iterator[None]:
    """Airflow 3.0: ``dag.test()``'s in-process task-to-supervisor channel, made to act as a worker's.

    A worker's task process talks to its supervisor over a socket, which neither logs what the task
    sends nor skips validating the answers. 3.0's in-process channel (``dag.test()`` only) does both,
    upstream:

    * It logs every message at debug level, on a stdout without the secrets masker, and
      ``mask_secret`` sends the value to mask: a connection's password is printed (``Sending request
      msg=MaskSecret(value='...')``). Here the message is not logged, as over the socket (3.1 masks
      the value before sending it).
    * The reschedule start date comes back as a string (``model_construct`` of the API's JSON), so the
      second poke of any sensor in ``mode="reschedule"`` fails in Airflow's ``BaseSensorOperator``:
      "unsupported operand type(s) for -: 'datetime.datetime' and 'str'". Validated here as the
      socket's decoder would.
    """
    from airflow.sdk.execution_time import supervisor
    from airflow.sdk.execution_time.comms import TaskRescheduleStartDate

    comms = supervisor.InProcessSupervisorComms
    original_send = comms.send

    def send(self: Any, msg: Any) -> Any:
        # InProcessSupervisorComms.send in 3.0.6, without its `self.log.debug("Sending request", msg=msg)`.
        with supervisor.set_supervisor_comms(None):
            self.supervisor._handle_request(msg, supervisor.log, 0)
        response = self._get_response()
        if isinstance(response, TaskRescheduleStartDate) and isinstance(response.start_date, str):
            response = TaskRescheduleStartDate(start_date=response.start_date)
        return response

    comms.send = send
    try:
        yield
    finally:
        comms.send = original_send


@functools.cache
def _cached_api_server(factory: Callable[[], Any]) -> Callable[[], Any]:
    return functools.cache(factory)


def _run_dag(dag: Any, conf: dict[str, Any] | None = None) -> DagRunResult:
    started = time.monotonic()
    if _airflow_v3():
        with _private_dags_folder_bundle(), _dag_test_as_on_3_3():
            _sync_bag_to_db(dag)
            dag_run = dag.test(run_conf=conf)
    else:  # Airflow 2.11: dag.test() writes what it needs itself
        dag_run = dag.test(run_conf=conf)
    return DagRunResult(dag_run, time.monotonic() - started)


@pytest.fixture
def run_dag(airflow_db: None) -> Callable[..., DagRunResult]:
    """``run_dag(dag, conf=None) -> DagRunResult`` (a ``{task_id: state}`` dict with extras)."""
    return _run_dag


@pytest.fixture
def sync_dag(airflow_db: None) -> Callable[[Any], None]:
    """Write a DAG built in a test to the metadata database, as the dag-processor would (3.x only)."""

    def sync(dag: Any) -> None:
        with _private_dags_folder_bundle():
            _sync_bag_to_db(dag)

    return sync


@pytest.fixture
def make_dag(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``with make_dag(params=...) as dag:`` a manual-only DAG whose id is unique to the test."""
    from airflow.providers.common.compat.sdk import DAG

    dag_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")[:200]

    def make(suffix: str = "", **kwargs: Any) -> Any:
        kwargs.setdefault("schedule", None)
        kwargs.setdefault("start_date", START_DATE)
        kwargs.setdefault("catchup", False)
        return DAG(dag_id + suffix, **kwargs)

    return make


@pytest.fixture
def resumed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Events CreditsSensor.execute_complete was called with: proof that a wait went through the trigger."""
    from airflow_provider_localleads.sensors.credits import CreditsSensor

    events: list[Any] = []
    original = CreditsSensor.execute_complete

    def spy(self: Any, context: Any, event: Any = None) -> Any:
        events.append(event)
        return original(self, context, event)

    monkeypatch.setattr(CreditsSensor, "execute_complete", spy)
    return events


# --------------------------------------------------------------------------------------------------
# Why tasks failed
# --------------------------------------------------------------------------------------------------


@dataclass
class FailureRecorder:
    """Pass ``on_failure_callback=rec.on_failure, on_retry_callback=rec.on_retry`` to a task."""

    failures: dict[str, list[BaseException]] = field(default_factory=dict)
    retries: dict[str, list[BaseException]] = field(default_factory=dict)

    def on_failure(self, context: Any) -> None:
        self.failures.setdefault(context["ti"].task_id, []).append(context.get("exception"))

    def on_retry(self, context: Any) -> None:
        self.retries.setdefault(context["ti"].task_id, []).append(context.get("exception"))

    def error(self, task_id: str) -> BaseException:
        """The exception that finally failed ``task_id`` (exactly one must have been recorded)."""
        errors = self.failures.get(task_id, [])
        assert len(errors) == 1, f"expected one failure of {task_id!r}, got {errors!r}"
        assert errors[0] is not None, f"failure of {task_id!r} recorded without an exception"
        return errors[0]

    def callbacks(self) -> dict[str, Any]:
        return {"on_failure_callback": self.on_failure, "on_retry_callback": self.on_retry}


@pytest.fixture
def failures() -> FailureRecorder:
    return FailureRecorder()


# --------------------------------------------------------------------------------------------------
# What the tasks logged
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def task_log(capfd: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """``task_log()``: everything the run's tasks and triggers logged so far in this test."""
    with captured_task_logs(capfd) as read:
        yield read


# --------------------------------------------------------------------------------------------------
# Sandbox connections
# --------------------------------------------------------------------------------------------------


@dataclass
class SandboxConn:
    """Points ``localleads_default`` (or another id) at a sandbox, with chosen extras or key."""

    sandbox: SandboxServer
    monkeypatch: pytest.MonkeyPatch

    @staticmethod
    def env_var(conn_id: str = CONN_ID) -> str:
        return f"AIRFLOW_CONN_{conn_id.upper()}"

    def conn_json(
        self,
        *,
        sandbox: SandboxServer | None = None,
        api_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        conn = json.loads((sandbox or self.sandbox).connection_json(extra=extra))
        if api_key is not None:
            conn["password"] = api_key
        return json.dumps(conn)

    def set(
        self,
        *,
        sandbox: SandboxServer | None = None,
        api_key: str | None = None,
        extra: dict[str, Any] | None = None,
        conn_id: str = CONN_ID,
    ) -> str:
        """Set ``AIRFLOW_CONN_<ID>`` for this test (restored afterwards); returns the conn id."""
        self.monkeypatch.setenv(self.env_var(conn_id), self.conn_json(sandbox=sandbox, api_key=api_key, extra=extra))
        return conn_id

    def balance_requests(self, sandbox: SandboxServer | None = None) -> int:
        return (sandbox or self.sandbox).request_count(BALANCE_PATH)


@pytest.fixture
def sandbox_conn(localleads_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxConn:
    """The sandbox fixture plus connection control; by default one hook retry (fast: 0.25-0.5 s)."""
    conn = SandboxConn(localleads_sandbox, monkeypatch)
    conn.set(extra={"max_retries": 1})
    return conn


# --------------------------------------------------------------------------------------------------
# Changing the world while a DAG runs
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def once_polled(
    sandbox: SandboxServer, delay: float, action: Callable[[], Any], *, after_requests: int = 1
) -> Iterator[threading.Thread]:
    """Run ``action`` ``delay`` s after the sandbox saw its ``after_requests``-th balance request.

    Timed from the task's first request, not from when ``dag.test()`` was called, so the start-up of
    the run (seconds for the first run of a session) cannot eat the wait.
    """
    stop = threading.Event()

    def watch() -> None:
        while sandbox.request_count(BALANCE_PATH) < after_requests:
            if stop.wait(0.01):
                return
        if not stop.wait(delay):
            action()

    thread = threading.Thread(target=watch, name="localleads-test-later", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(5)


@pytest.fixture
def when_polled() -> Callable[..., contextlib.AbstractContextManager[threading.Thread]]:
    """``with when_polled(sandbox, 1.5, lambda: sandbox.top_up(100)): run_dag(dag)``."""
    return once_polled
