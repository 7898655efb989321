"""A real Airflow deployment for the deployment tests, and the helpers the tests drive it with.

``Deployment.start()`` brings up, on 127.0.0.1 only and on free ports: PostgreSQL, Redis, the
package's sandbox (``python -m airflow_provider_localleads.sandbox``) with a canary API key, then
Airflow with the CeleryExecutor: ``airflow db migrate``, the api-server, scheduler, dag-processor,
triggerer and one Celery worker with two prefork processes (``--concurrency 2``). The connection is
created through the REST API, as the UI form does, so its key is stored Fernet-encrypted.

Airflow 3.x only (the lines CI runs this on: 3.3.2 and 3.2.2). Every component gets the same
configuration through ``AIRFLOW__*`` variables; log servers are not started (``--skip-serve-logs``:
they listen on every interface), so task and trigger logs are read from the shared log folder.

Helpers: :meth:`write_dag`, :meth:`trigger`, :meth:`wait_for`, :meth:`task_instances`,
:meth:`task_log`, :meth:`kill_triggerer` / :meth:`start_triggerer`, :meth:`trigger_rows`,
:meth:`log_files`, :meth:`table_rows`. Importable as ``deployment_airflow``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployment_services import Postgres, Redis, Service, ServiceSet, free_port, wait_until

from airflow_provider_localleads.sandbox import BALANCE_PATH, SandboxClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONN_ID = "localleads_default"
#: How long to wait for something that should take seconds on an idle machine (it bounds a hang only).
SLOW = 300.0
FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
#: The triggerer's own warning when a trigger holds its event loop (above 0.2 s).
BLOCKED_WARNING = "Triggerer's async thread was blocked for"
#: What Airflow's processes inherit from the test's environment; everything else is set explicitly.
#: AIRFLOW__API_AUTH__JWT_ISSUER: dev.py sets it for the lines that need one (see LINES there).
_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "AIRFLOW__API_AUTH__JWT_ISSUER")


@dataclass(frozen=True)
class TaskInstance:
    task_id: str
    state: str | None
    try_number: int


class Deployment:
    """Everything one test session starts; :meth:`stop` ends it all (also at interpreter exit)."""

    def __init__(self, root: Path) -> None:
        shutil.rmtree(root, ignore_errors=True)
        self.root = root
        self.home = root / "airflow-home"
        self.dags = root / "dags"
        self.service_logs = root / "services"
        for path in (self.home, self.dags, self.service_logs):
            path.mkdir(parents=True)
        self.api_key = f"sk_canary_{secrets.token_hex(12)}"
        self.services = ServiceSet()
        self.triggerers: list[Service] = []
        self.postgres: Postgres | None = None
        self.api_port = free_port()
        self.sandbox_port = free_port()
        self.sandbox = SandboxClient(f"http://127.0.0.1:{self.sandbox_port}")
        self._token: str | None = None
        self._db: Any = None
        self.env: dict[str, str] = {}

    # ---------------------------------------------------------------- start and stop

    def start(self) -> Deployment:
        self.postgres = Postgres(self.services, self.service_logs)
        redis = Redis(self.services, self.service_logs)
        self._start_sandbox()
        self.env = self._airflow_env(self.postgres.url(), redis.url())
        migrate = self.airflow("db", "migrate", timeout=SLOW)
        assert migrate.returncode == 0, f"airflow db migrate failed:\n{migrate.stdout[-3000:]}{migrate.stderr[-3000:]}"
        api = self._airflow_service("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
        wait_until(lambda: self._get("/api/v2/monitor/health") is not None, SLOW, f"the api-server\n{api.tail()}")
        self._create_connection()
        self._airflow_service("scheduler", "scheduler", "--skip-serve-logs")
        self._airflow_service("dag-processor", "dag-processor")
        self.start_triggerer()
        worker = self._airflow_service(
            "celery-worker", "celery", "worker", "--concurrency", "2", "--skip-serve-logs",
            "--celery-hostname", "localleads-deploy@127.0.0.1",
        )  # fmt: skip
        wait_until(lambda: " ready." in worker.tail(20000), SLOW, f"the Celery worker\n{worker.tail()}")
        wait_until(self._healthy, SLOW, "scheduler, dag-processor and triggerer to report healthy")
        return self

    def stop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self.services.stop_all()
        if self.postgres is not None:
            self.postgres.cleanup()

    def _airflow_env(self, db_url: str, broker_url: str) -> dict[str, str]:
        """The configuration every component shares (names from airflow/config_templates/config.yml)."""
        from cryptography.fernet import Fernet

        env = {k: v for k, v in os.environ.items() if k in _PASSTHROUGH}
        env.update(
            AIRFLOW_HOME=str(self.home),
            NO_PROXY="*",
            no_proxy="*",
            PYTHONUNBUFFERED="1",
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            # Retries are there to be refused: a task that retried anyway shows up as try 2.
            AIRFLOW__CORE__DEFAULT_TASK_RETRIES="2",
            AIRFLOW__CORE__PARALLELISM="128",
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="128",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.api_port}/execution/",
            AIRFLOW__CORE__AUTH_MANAGER=(
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            # Loopback only, for one test session: every API caller is an admin, no login.
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url,
            AIRFLOW__CELERY__BROKER_URL=broker_url,
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + db_url.replace("+psycopg2", ""),
            AIRFLOW__CELERY__WORKER_CONCURRENCY="2",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{self.api_port}",
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            # New DAG files are found within seconds; written once, they need no re-parsing.
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="600",
            AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
            # A replacement triggerer adopts a dead one's triggers after this many seconds of silence.
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="15",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        )
        return env

    def dag_test_env(self, dag_files: Mapping[str, str]) -> dict[str, str]:
        """Configuration for ``dag.test()`` in another process: its own SQLite home and DAGs folder
        under this deployment's root (so its files are searched for the key too), the same sandbox."""
        home, dags = self.root / "dag-test-home", self.root / "dag-test-dags"
        dags.mkdir(parents=True, exist_ok=True)
        for name, source in dag_files.items():
            (dags / name).write_text(source)
        env = {k: v for k, v in os.environ.items() if k in _PASSTHROUGH}
        connection = {"conn_type": "localleads", "host": self.sandbox.url, "password": self.api_key}
        env.update(
            AIRFLOW_HOME=str(home),
            NO_PROXY="*",
            no_proxy="*",
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DEFAULT_TASK_RETRIES=self.env["AIRFLOW__CORE__DEFAULT_TASK_RETRIES"],
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
            AIRFLOW_CONN_LOCALLEADS_DEFAULT=json.dumps(connection),
        )
        return env

    def _start_sandbox(self) -> None:
        service = Service(
            "sandbox",
            [sys.executable, "-m", "airflow_provider_localleads.sandbox", "--port", str(self.sandbox_port)],
            self.service_logs / "sandbox.log",
            # The key through the environment, never argv. The sandbox's one stdout line repeats the
            # key (for a person to export), so its stdout goes nowhere; stderr goes to the log.
            env={**os.environ, "LOCALLEADS_SANDBOX_API_KEY": self.api_key},
            discard_stdout=True,
        )
        self.services.add(service)
        wait_until(self._sandbox_up, 60, f"the sandbox on port {self.sandbox_port}\n{service.tail()}")

    def _sandbox_up(self) -> bool:
        try:
            self.sandbox.state()
        except Exception:
            return False
        return True

    def _airflow_service(self, name: str, *args: str) -> Service:
        return self.services.add(Service(name, [BIN / "airflow", *args], self.service_logs / f"{name}.log", self.env))

    def start_triggerer(self) -> Service:
        """Start a(nother) triggerer; each one gets its own log file."""
        name = f"triggerer-{len(self.triggerers) + 1}"
        service = self._airflow_service(name, "triggerer", "--skip-serve-logs")
        self.triggerers.append(service)
        return service

    def kill_triggerer(self) -> Service:
        """SIGKILL the running triggerer and every process it started, as when its machine dies."""
        service = next(s for s in reversed(self.triggerers) if s.running())
        service.kill()
        return service

    def _healthy(self) -> bool:
        health = self._get("/api/v2/monitor/health") or {}
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    # ---------------------------------------------------------------- Airflow's CLI and REST API

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def api(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One REST call to the api-server as an admin; raises with the answer on any non-2xx."""
        if self._token is None:
            self._token = self._request("GET", "/auth/token")["access_token"]
        return self._request(method, path, body, {"Authorization": f"Bearer {self._token}"})

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None, headers: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path} -> HTTP {err.code}: {err.read()[:2000]!r}") from None
        return json.loads(raw) if raw else None

    def _get(self, path: str) -> Any:
        try:
            return self._request("GET", path)
        except (OSError, AssertionError):
            return None

    def _create_connection(self) -> None:
        self.api(
            "POST",
            "/api/v2/connections",
            {
                "connection_id": CONN_ID,
                "conn_type": "localleads",
                "host": f"http://127.0.0.1:{self.sandbox_port}",
                "password": self.api_key,
            },
        )

    # ---------------------------------------------------------------- DAGs and runs

    def write_dag(self, filename: str, source: str, dag_ids: list[str]) -> None:
        """Write a DAG file into the DAGs folder and wait until the dag-processor has stored its DAGs."""
        (self.dags / filename).write_text(textwrap.dedent(source))

        def stored() -> bool:
            rows = self.query("SELECT dag_id FROM serialized_dag WHERE dag_id = ANY(%s)", (dag_ids,))
            return {row[0] for row in rows} == set(dag_ids)

        wait_until(stored, SLOW, f"the dag-processor to store {dag_ids}\n{self.import_errors()}")

    def import_errors(self) -> list[Any]:
        return self.query("SELECT filename, stacktrace FROM import_error")

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> str:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return run_id

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
        rows = self.query(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        )
        return {task_id: TaskInstance(task_id, state, try_number) for task_id, state, try_number in rows}

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task_id: ti.state for task_id, ti in self.task_instances(dag_id, run_id).items()}

    def dag_run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
        return rows[0][0] if rows else None

    def wait_for(
        self, dag_id: str, run_id: str, done: Callable[[dict[str, str | None]], bool], what: str, timeout: float = SLOW
    ) -> dict[str, str | None]:
        """Wait until ``done(states)`` holds for the run's ``{task_id: state}``; return those states."""

        def check() -> dict[str, str | None] | None:
            states = self.states(dag_id, run_id)
            return states if states and done(states) else None

        try:
            return wait_until(check, timeout, f"{what} in {dag_id}/{run_id}", interval=1.0)
        except AssertionError as err:
            counts: dict[str | None, int] = {}
            for state in self.states(dag_id, run_id).values():
                counts[state] = counts.get(state, 0) + 1
            raise AssertionError(f"{err}; task states now: {counts}\n{self.diagnostics()}") from None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = SLOW) -> dict[str, str | None]:
        """Wait until the run itself has finished (success or failed); return its task states."""
        wait_until(
            lambda: self.dag_run_state(dag_id, run_id) in ("success", "failed"),
            timeout,
            f"{dag_id}/{run_id} to finish\n{self.diagnostics()}",
            interval=1.0,
        )
        return self.states(dag_id, run_id)

    def diagnostics(self) -> str:
        """What to look at when a wait times out: each service's state and the tail of its log."""
        lines = [f"deployment files under {self.root}"]
        for service in self.services:
            lines.append(f"--- {service.name} (pid {service.pid}, running={service.running()}): {service.log}")
            lines.append(service.tail(1500))
        return "\n".join(lines)

    # ---------------------------------------------------------------- what the deployment left behind

    def query(self, sql: str, params: Any = None) -> list[Any]:
        if self._db is None:
            assert self.postgres is not None
            self._db = self.postgres.connect()
        with self._db.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def fernet(self) -> Any:
        from cryptography.fernet import Fernet

        return Fernet(self.env["AIRFLOW__CORE__FERNET_KEY"].encode())

    def trigger_rows(self) -> list[dict[str, Any]]:
        """Every trigger row, kwargs decrypted (Airflow stores them Fernet-encrypted)."""
        rows = self.query("SELECT id, classpath, kwargs, triggerer_id FROM trigger ORDER BY id")
        out = []
        for trigger_id, classpath, kwargs, triggerer_id in rows:
            plain = kwargs if kwargs.startswith("{") else self.fernet().decrypt(kwargs.encode()).decode()
            out.append({"id": trigger_id, "classpath": classpath, "kwargs": plain, "triggerer_id": triggerer_id})
        return out

    def triggerer_jobs(self) -> list[tuple[int, str]]:
        return [tuple(r) for r in self.query("SELECT id, state FROM job WHERE job_type = 'TriggererJob' ORDER BY id")]

    def table_rows(self) -> Iterator[tuple[str, str, str]]:
        """``(table, column, text)`` for every non-null value in every table of the metadata database."""
        tables = [r[0] for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            with self._db.cursor() as cursor:
                cursor.execute(f'SELECT * FROM "{table}"')
                columns = [c.name for c in cursor.description]
                for row in cursor.fetchall():
                    for column, value in zip(columns, row, strict=True):
                        if value is not None:
                            yield table, column, _text(value)

    def log_files(self) -> list[Path]:
        """Every file the deployment wrote under its root: service output, task and trigger logs."""
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def task_log(self, dag_id: str, run_id: str, task_id: str, *, trigger: bool = False) -> str:
        """One task instance's log files (all attempts) concatenated: what it logged on workers, or with
        ``trigger=True`` what its triggers logged in triggerers (``attempt=N.log.trigger.<job>.log``)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        files = [p for p in sorted(folder.rglob("*.log")) if (".trigger." in p.name) == trigger]
        return "\n".join(p.read_text(errors="replace") for p in files)

    def balance_requests(self) -> list[dict[str, Any]]:
        return self.sandbox.requests(BALANCE_PATH)

    def blocked_warnings(self, service: Service, since: int = 0) -> list[str]:
        """The triggerer's "async thread was blocked" lines, from byte ``since`` of its log."""
        with service.log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [line.strip() for line in text.splitlines() if BLOCKED_WARNING in line]


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def wait_seconds(seconds: float) -> None:
    """Let time pass on purpose (a poll interval to elapse), as opposed to waiting for a condition."""
    time.sleep(seconds)
