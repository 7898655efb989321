"""The ``deployment`` fixture: one real Airflow deployment per test session, and the scenarios run on it.

The suite runs where dev.py installs the ``deploy`` extra (Airflow 3.3.2 and 3.2.2) and skips
elsewhere, saying why. On a machine without PostgreSQL or Redis it skips too, unless
``LOCALLEADS_REQUIRE_DEPLOYMENT=1`` (set by .ci/run), which turns that skip into a failure.

Each scenario (a set of DAG runs with its figures) is a session fixture, so it runs once however
many tests look at it, and the exposure test (key in no log or table) can ask for all of them.
Everything started is stopped by process id when the session ends, whatever happened
(fixture finalizer, and ``atexit`` as a last resort).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import pytest
from deployment_airflow import ROOT, Deployment
from deployment_scenarios import (
    FIGURES,
    ControlScenario,
    PreflightScenario,
    RescheduleScenario,
    SensorScenario,
    run_control,
    run_preflight,
    run_reschedule,
    run_sensors,
)
from deployment_services import missing_binaries

REQUIRE = os.environ.get("LOCALLEADS_REQUIRE_DEPLOYMENT") == "1"


def _not_on_this_line() -> str | None:
    airflow = version("apache-airflow")
    if int(airflow.split(".")[0]) < 3:
        return f"the deployment test drives Airflow 3's api-server and dag-processor (this is {airflow})"
    try:
        version("apache-airflow-providers-celery")
    except PackageNotFoundError:
        return (
            f"the deployment test needs the 'deploy' extra (Celery, PostgreSQL driver), which dev.py "
            f"installs only on the lines that run it, not on Airflow {airflow}"
        )
    return None


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    reason = _not_on_this_line()
    if reason:
        pytest.skip(reason)
    missing = missing_binaries()
    if missing and REQUIRE:
        pytest.fail(f"{missing}; LOCALLEADS_REQUIRE_DEPLOYMENT=1 requires them")
    if missing:
        pytest.skip(missing)
    deployment = Deployment(ROOT / ".test-artifacts" / f"deployment-airflow-{version('apache-airflow')}")
    try:
        yield deployment.start()
    finally:
        deployment.stop()


@pytest.fixture(scope="session")
def sensor_scenario(deployment: Deployment) -> SensorScenario:
    return run_sensors(deployment)


@pytest.fixture(scope="session")
def reschedule_scenario(deployment: Deployment) -> RescheduleScenario:
    return run_reschedule(deployment)


@pytest.fixture(scope="session")
def preflight_scenario(deployment: Deployment) -> PreflightScenario:
    return run_preflight(deployment)


@pytest.fixture(scope="session")
def control_scenario(deployment: Deployment, sensor_scenario: SensorScenario) -> ControlScenario:
    """Airflow's own time sensors, as many as the sensor scenario had, after it (same machine, same load)."""
    return run_control(deployment, sensor_scenario)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The scenarios' figures (requests per interval, triggerer hand-over, blocked-loop warnings)."""
    if FIGURES:
        terminalreporter.section(f"LocalLeads deployment on Airflow {version('apache-airflow')}")
        for line in FIGURES:
            terminalreporter.write_line(line)
