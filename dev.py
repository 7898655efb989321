#!/usr/bin/env python3
"""The project's two entry points: ``python3 dev.py demo`` and ``python3 dev.py test``.

Needs nothing but Python 3.11+. Each command builds (or reuses) its own virtual environments under
``.venvs/``: uv is installed into a small bootstrap venv with pip, then uv creates one environment
per tested Airflow version with this package installed in editable mode. Re-runs reuse them and
only reinstall when ``pyproject.toml`` or the Airflow version changes.

    python3 dev.py demo            # start the sandbox API and run the example DAGs against it
    python3 dev.py test            # ruff + mypy + pytest on every Airflow line we support
    python3 dev.py test -k hook    # extra arguments go to pytest

``LOCALLEADS_AIRFLOW_VERSIONS`` (comma-separated) overrides the Airflow versions tested.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
UV_VERSION = "uv>=0.5"


@dataclass(frozen=True)
class Line:
    """How one Airflow line is installed and tested.

    ``pins``: what the line needs installed beside Airflow, each with its reason. Mostly upper bounds:
    Airflow's constraint files cannot be downloaded here, so uv installs today's newest dependencies,
    and some of those break an older line before the provider is involved. Each was checked by
    installing the line with and without it and running a trivial DAG with ``airflow dags test``;
    drop a pin when that passes without it.
    ``env``: configuration the line needs, for its tests and any Airflow it starts.
    ``deploy``: install the ``deploy`` extra (Celery, Redis, PostgreSQL clients) and run tests/deployment.
    ``airflow_only``: leave out the tests in ``NOT_AIRFLOW`` (unless test paths are given).
    """

    pins: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    deploy: bool = False
    airflow_only: bool = False
    #: Tested by ``python3 dev.py test`` (and CI) unless LOCALLEADS_AIRFLOW_VERSIONS says otherwise.
    default: bool = True


# Tests of code that does not change with the Airflow line: the sandbox (standard library only) and the
# hook's HTTP behaviour against misbehaving servers, retries, pagination and malformed answers, where
# only the connection look-up is Airflow's (tests/integration covers that on every line). They run on
# 3.3.2 and 2.11.2; the lines between leave them out to keep CI short.
NOT_AIRFLOW = (
    "tests/sandbox",
    "tests/reliability/test_rel_malformed_input.py",
    "tests/reliability/test_rel_misbehaving_servers.py",
    "tests/reliability/test_rel_pagination.py",
    "tests/reliability/test_rel_retry_policy.py",
)


# Not a fix but what the connection form needs on 3.0 and 3.1: they build a provider's form fields from
# the hook's wtforms widgets only when flask-appbuilder (and with it wtforms) is installed; without it
# no provider's fields appear, in the UI or in `airflow providers widgets`. 3.2+ read provider info.
FORM_WIDGETS = "apache-airflow-providers-fab"

# cryptography 51 (released after November 2026) made MultiFernet a Rust object without attributes;
# get_fernet() of 2.11, 3.0 and 3.1 sets `is_encrypted` on it, so with a Fernet key set (every deployment;
# `airflow db migrate` writes one) every connection look-up fails as "The conn_id ... isn't defined"
# ("'MultiFernet' object has no attribute 'is_encrypted'" underneath). 3.2 and 3.3 do not set it.
FERNET_BEFORE_3_2 = "cryptography<51"

# The newest patch of every Airflow line we support, in the order tested. ruff and mypy run in the
# first one's environment (LINT_LINE). 3.3.2 and 2.11.2 run the whole test suite, the lines between
# all but NOT_AIRFLOW.
LINES: dict[str, Line] = {
    "3.3.2": Line(deploy=True),
    "2.11.2": Line(pins=(FERNET_BEFORE_3_2,)),
    "3.2.2": Line(
        pins=(
            # fastapi >= 0.137: "PydanticUserError: Model 'TITerminalStatePayload' needs a discriminator
            # field": the api-server dies at import and every task fails. 3.3 requires fastapi<0.137 itself.
            "fastapi<0.137",
            # svcs 26 moved the registry into the lifespan's state: every task then fails in the execution
            # API with "'State' object has no attribute 'svcs_registry'" (3.1 and 3.3 work with svcs 26).
            "svcs<26",
        ),
        # The line before 3.3 whose triggerer does not share streams natively (in-process groups).
        deploy=True,
        airflow_only=True,
    ),
    # 3.1.8 requires fastapi<0.118 itself.
    "3.1.8": Line(pins=(FERNET_BEFORE_3_2, FORM_WIDGETS), airflow_only=True),
    "3.0.6": Line(
        pins=(
            # fastapi 0.165 or 0.136 (cadwyn 9 or 7): the execution API answers 422 to PATCH
            # task-instances/{id}/run ("Input should be a valid dictionary"); 0.120 (cadwyn 5.6):
            # "unhashable type: 'Depends'"; every task fails before it starts. fastapi<0.118 is what 3.1.8
            # requires and brings cadwyn 5.4.6 (cadwyn 6 needs fastapi>=0.121.1: no cadwyn pin needed).
            "fastapi<0.118",
            FERNET_BEFORE_3_2,
            FORM_WIDGETS,
        ),
        # PyJWT 2.15: the api-server refuses the tokens it signed itself ("Issuer (iss) must be a
        # string") unless an issuer is configured.
        env={"AIRFLOW__API_AUTH__JWT_ISSUER": "airflow"},
        airflow_only=True,
    ),
}

LINT_LINE = next(iter(LINES))


def _log(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def _run(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True) -> int:
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, check=False)  # noqa: S603
    if check and result.returncode != 0:
        sys.exit(result.returncode)
    return result.returncode


def _bin(env_dir: Path, name: str) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / name


def _uv() -> Path:
    """uv, installed once into .venvs/bootstrap with the standard library's venv and pip."""
    boot = VENVS / "bootstrap"
    uv = _bin(boot, "uv")
    if not uv.exists():
        _log("Installing uv into .venvs/bootstrap")
        venv.EnvBuilder(with_pip=True, clear=True).create(boot)
        _run(_bin(boot, "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", UV_VERSION)
    return uv


def ensure_env(airflow_version: str) -> Path:
    """Create/refresh .venvs/airflow-<version> with this package, its test extras and that Airflow."""
    line = LINES.get(airflow_version, Line())
    env_dir = VENVS / f"airflow-{airflow_version}"
    python = _bin(env_dir, "python")
    stamp = env_dir / ".installed"
    extras = "test,deploy" if line.deploy else "test"
    requirements = [f"{ROOT}[{extras}]", f"apache-airflow=={airflow_version}", *line.pins]
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr(requirements).encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    uv = _uv()
    _log(f"Preparing .venvs/airflow-{airflow_version} (Airflow {airflow_version}, Python {sys.version.split()[0]})")
    if not python.exists():
        _run(uv, "venv", "--quiet", "--python", sys.executable, env_dir)
    _run(uv, "pip", "install", "--quiet", "--python", python, "-e", *requirements)
    stamp.write_text(digest)
    return python


def _versions() -> list[str]:
    raw = os.environ.get("LOCALLEADS_AIRFLOW_VERSIONS", "")
    return [v.strip() for v in raw.split(",") if v.strip()] or [v for v, line in LINES.items() if line.default]


def cmd_test(pytest_args: list[str]) -> int:
    failures = []
    # ruff and mypy once, with the newest line whatever lines are picked: the types are checked against
    # 3.3's (older lines' stubs type BaseHook & co. as Any, which mypy's strict settings refuse).
    lint = ensure_env(LINT_LINE)
    _log(f"ruff (Airflow {LINT_LINE}'s environment)")
    _run(lint, "-m", "ruff", "check", ".")
    _run(lint, "-m", "ruff", "format", "--check", ".")
    _log("mypy")
    _run(lint, "-m", "mypy")
    for version in _versions():
        python = ensure_env(version)
        line = LINES.get(version, Line())
        names_tests = any((ROOT / arg.split("::")[0]).exists() for arg in pytest_args if not arg.startswith("-"))
        ignore = [f"--ignore={path}" for path in NOT_AIRFLOW] if line.airflow_only and not names_tests else []
        _log(f"pytest on Airflow {version}" + (" (tests that touch Airflow)" if ignore else ""))
        env = {**os.environ, **line.env}
        code = _run(python, "-m", "pytest", *ignore, *pytest_args, env=env, check=False)
        if code != 0:
            failures.append(version)
    if failures:
        _log(f"FAILED on Airflow {', '.join(failures)}")
        return 1
    _log(f"All green on Airflow {', '.join(_versions())}")
    return 0


def cmd_demo(args: list[str]) -> int:
    version = _versions()[0]
    python = ensure_env(version)
    env = {**os.environ, **LINES.get(version, Line()).env}
    return _run(python, ROOT / "scripts" / "demo.py", *args, env=env, check=False)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        print(f"Python 3.11+ is required, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    return cmd_test(argv[1:]) if argv[0] == "test" else cmd_demo(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
