#!/usr/bin/env python3
"""The project's entry points: ``python3 dev.py demo|test|lock|build``.

Needs nothing but Python 3.11+. Each command builds (or reuses) its own virtual environments under
``.venvs/``: uv is installed into a small bootstrap venv with pip, then uv creates one environment
per tested Airflow version with this package installed in editable mode, every other package at the
version its constraints file (``constraints/airflow-<version>-py3.11.txt``) names. Re-runs reuse
them and only reinstall when ``pyproject.toml``, the line's pins or its constraints file change.

    python3 dev.py demo            # start the sandbox API and run the example DAGs against it
    python3 dev.py test            # ruff + mypy + pytest on every Airflow line we support, the built
                                   # wheel installed beside Airflow 3.3.2 and 2.11.2 (tests/packaging)
    python3 dev.py test -k hook    # extra arguments go to pytest
    python3 dev.py test --latest   # the same with today's newest dependencies instead of the locked ones
    python3 dev.py lock            # (re)write the constraints files with uv's resolver
    python3 dev.py build           # sdist + wheel into dist/, checked (twine, check-wheel-contents)

``LOCALLEADS_AIRFLOW_VERSIONS`` (comma-separated) overrides the Airflow versions tested (and locked).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
CONSTRAINTS = ROOT / "constraints"
#: The build backend's versions, for ``dev.py build`` (written by ``dev.py lock`` too).
BUILD_CONSTRAINTS = CONSTRAINTS / "build.txt"
DIST = ROOT / "dist"
PROJECT = "airflow-provider-localleads"
#: The Python the constraints are resolved for (and CI runs).
PYTHON = "3.11"
UV_VERSION = "uv>=0.5"


@dataclass(frozen=True)
class Line:
    """How one Airflow line is installed and tested.

    ``pins``: what the line needs installed beside Airflow, each with its reason: inputs of ``dev.py
    lock`` (and of ``--latest``). Mostly upper bounds: Airflow's constraint files cannot be downloaded
    here, so the resolver picks the newest dependencies, and some of those break an older line before
    the provider is involved. Each was checked by installing the line with and without it and running
    a trivial DAG with ``airflow dags test``; drop a pin when that passes without it (and re-lock).
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
# all but NOT_AIRFLOW. Each is installed from its constraints file (`python3 dev.py lock` writes them,
# every line's pins among the inputs), a preview line included.
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
    # Preview of the next line (a beta): not in CI by default (its 4 to 8.5 minutes would take CI to 45 or
    # past), run with LOCALLEADS_AIRFLOW_VERSIONS=3.4.0b2; no pins needed (2026-12-08: the tests that
    # touch Airflow all passed); docs/compatibility.md has its last result.
    "3.4.0b2": Line(airflow_only=True, default=False),
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


def _requirements(version: str) -> list[str]:
    """What a line installs: this package with its extras, that Airflow, the line's pins."""
    line = LINES.get(version, Line())
    extras = "test,deploy" if line.deploy else "test"
    return [f"{ROOT}[{extras}]", f"apache-airflow=={version}", *line.pins]


def constraints_file(version: str) -> Path:
    return CONSTRAINTS / f"airflow-{version}-py{PYTHON}.txt"


def _pyproject() -> dict[str, Any]:
    import tomllib  # here: main() must be able to tell a Python < 3.11 what it needs

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock_inputs(version: str) -> tuple[list[str], str]:
    """The lock's inputs as written in its header (the checkout as ``.``) and their digest, which also
    covers the dependency lists of pyproject.toml the lock resolved."""
    inputs = [req.replace(str(ROOT), ".", 1) for req in _requirements(version)]
    project = _pyproject()["project"]
    resolved = [inputs, project["dependencies"], project["optional-dependencies"]]
    return inputs, hashlib.sha256(repr(resolved).encode()).hexdigest()


def _locked(version: str) -> Path:
    """The line's constraints file; stops, saying what to run, when it is missing or out of date."""
    path = constraints_file(version)
    rel = path.relative_to(ROOT)
    lock_it = f"run `LOCALLEADS_AIRFLOW_VERSIONS={version} python3 dev.py lock`"
    if not path.exists():
        _log(f"No {rel}: {lock_it} (nothing is resolved anew on a normal run)")
        sys.exit(2)
    if f"# inputs-sha256: {_lock_inputs(version)[1]}\n" not in path.read_text():
        _log(f"{rel} was locked from other inputs (pyproject.toml's dependencies or the line's pins): {lock_it}")
        sys.exit(2)
    return path


def _compile(requirements: list[str], *options: str) -> str:
    """uv's resolution of ``requirements`` for Python 3.11 on every platform, as requirements lines."""
    compile_ = ["pip", "compile", "--quiet", "--universal", "--python-version", PYTHON, "--no-header", *options, "-"]
    result = subprocess.run(  # noqa: S603
        [str(_uv()), *compile_], input="\n".join(requirements), capture_output=True, text=True, cwd=ROOT, check=False
    )
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        sys.exit(result.returncode)
    return result.stdout


def cmd_lock(_args: list[str]) -> int:
    """constraints/airflow-<version>-py3.11.txt for every line (preview lines too) with uv's resolver, and
    constraints/build.txt for the build backend."""
    CONSTRAINTS.mkdir(exist_ok=True)
    for version in _versions(preview=True):
        path = constraints_file(version)
        inputs, digest = _lock_inputs(version)
        _log(f"Locking Airflow {version} into {path.relative_to(ROOT)}")
        header = [
            f"# Apache Airflow {version} with {PROJECT} and its test extras, Python {PYTHON}: the versions tested.",
            f"# Written by `python3 dev.py lock` (uv pip compile --universal --python-version {PYTHON}) from:",
            *(f"#   {req}" for req in inputs),
            "# (each pin's reason: LINES in dev.py). Do not edit; re-lock. The provider itself is not pinned.",
            f"# inputs-sha256: {digest}",
        ]
        path.write_text("\n".join(header) + "\n" + _compile(_requirements(version), "--no-emit-package", PROJECT))
    _lock_build()
    return 0


def _lock_build() -> None:
    requires = _pyproject()["build-system"]["requires"]
    _log(f"Locking the build backend ({', '.join(requires)}) into {BUILD_CONSTRAINTS.relative_to(ROOT)}")
    header = "# pyproject.toml's [build-system] requires, for `dev.py build`; written by `python3 dev.py lock`.\n"
    BUILD_CONSTRAINTS.write_text(header + _compile(requires))


def ensure_env(version: str, latest: bool = False) -> Path:
    """.venvs/airflow-<version>: this package (editable), its test extras and that Airflow, everything at
    the versions of the line's constraints file; with ``latest``, .venvs/latest-airflow-<version> with
    today's newest versions (the line's pins still apply)."""
    requirements = _requirements(version)
    if latest:
        env_dir, source, digest = VENVS / f"latest-airflow-{version}", ["--upgrade"], ""
        how = "today's newest dependencies"
    else:
        lock = _locked(version)
        env_dir, source = VENVS / f"airflow-{version}", ["-c", str(lock)]
        # The lock's content is in the stamp: a re-lock reinstalls.
        state = (ROOT / "pyproject.toml").read_bytes() + repr(requirements).encode() + lock.read_bytes()
        digest = hashlib.sha256(state).hexdigest()
        how = f"-c {lock.relative_to(ROOT)}"
    python = _bin(env_dir, "python")
    stamp = env_dir / ".installed"
    if digest and python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    uv = _uv()
    _log(f"Preparing {env_dir.relative_to(ROOT)} (Airflow {version}, {how}, Python {sys.version.split()[0]})")
    if not python.exists():
        _run(uv, "venv", "--quiet", "--python", sys.executable, env_dir)
    _run(uv, "pip", "install", "--quiet", "--exact", "--python", python, "-e", *requirements, *source)
    stamp.write_text(digest)
    return python


def _versions(preview: bool = False) -> list[str]:
    raw = os.environ.get("LOCALLEADS_AIRFLOW_VERSIONS", "")
    chosen = [v.strip() for v in raw.split(",") if v.strip()]
    return chosen or [v for v, line in LINES.items() if line.default or preview]


def _pytest(version: str, python: Path, pytest_args: list[str], extra_env: dict[str, str] | None = None) -> int:
    line = LINES.get(version, Line())
    names_tests = any((ROOT / arg.split("::")[0]).exists() for arg in pytest_args if not arg.startswith("-"))
    ignore = [f"--ignore={path}" for path in NOT_AIRFLOW] if line.airflow_only and not names_tests else []
    where = python.parent.parent.relative_to(ROOT)
    _log(f"pytest on Airflow {version} in {where}" + (" (tests that touch Airflow)" if ignore else ""))
    env = {**os.environ, **line.env, **(extra_env or {})}
    return _run(python, "-m", "pytest", *ignore, *pytest_args, env=env, check=False)


def _freeze(python: Path) -> dict[str, str]:
    """{normalised name: version} of what is installed in a venv (the editable project left out)."""
    out = subprocess.run(  # noqa: S603
        [str(_uv()), "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True
    ).stdout
    pairs = (line.split("==", 1) for line in out.splitlines() if "==" in line)
    return {name.lower().replace("_", "-").replace(".", "-"): ver for name, ver in pairs}


def _report_latest(version: str, newest_python: Path, pytest_args: list[str], passed: bool) -> None:
    """Which packages today's newest changes from the lock; after a failure, whether the lock passes."""
    locked_python = ensure_env(version)
    locked, newest = _freeze(locked_python), _freeze(newest_python)
    changed = [
        f"{name} {locked.get(name, '(not locked)')} -> {newest.get(name, '(not installed)')}"
        for name in sorted(locked.keys() | newest.keys())
        if locked.get(name) != newest.get(name)
    ]
    rel = constraints_file(version).relative_to(ROOT)
    _log(f"Airflow {version}: today's newest differs from {rel} in {len(changed)} package(s)")
    for entry in changed:
        print(f"    {entry}")
    if passed:
        return
    _log(f"Airflow {version}: failed with today's newest; the same tests with the locked versions")
    if _pytest(version, locked_python, pytest_args) == 0:
        _log(f"Airflow {version}: passes locked, fails with today's newest: the cause is among the packages above")
    else:
        _log(f"Airflow {version}: fails with the locked versions too: not (only) a newer dependency")


def _lint() -> None:
    """ruff and mypy once, with the newest line whatever lines are picked: the types are checked against
    3.3's (older lines' stubs type BaseHook & co. as Any, which mypy's strict settings refuse)."""
    lint = ensure_env(LINT_LINE)
    _log(f"ruff (Airflow {LINT_LINE}'s environment)")
    _run(lint, "-m", "ruff", "check", ".")
    _run(lint, "-m", "ruff", "format", "--check", ".")
    _log("mypy")
    _run(lint, "-m", "mypy")


def cmd_test(args: list[str]) -> int:
    latest = "--latest" in args
    pytest_args = [arg for arg in args if arg != "--latest"]
    _lint()
    # The released artefacts are checked with the locked versions, in a whole run (or one naming them).
    wheel_envs = {} if latest else _wheel_envs(pytest_args)
    failures = []
    for version in _versions():
        python = ensure_env(version, latest)
        code = _pytest(version, python, pytest_args, wheel_envs.get(version))
        if latest:
            _report_latest(version, python, pytest_args, passed=code == 0)
        if code != 0:
            failures.append(version)
    if failures:
        _log(f"FAILED on Airflow {', '.join(failures)}")
        return 1
    _log(f"All green on Airflow {', '.join(_versions())}")
    return 0


def _build() -> tuple[Path, Path]:
    """The sdist and the wheel (built from the sdist) in dist/, checked; returns both."""
    shutil.rmtree(DIST, ignore_errors=True)
    _log("uv build: the sdist and the wheel into dist/")
    if not BUILD_CONSTRAINTS.exists():
        _log(f"No {BUILD_CONSTRAINTS.relative_to(ROOT)}: run `python3 dev.py lock`")
        sys.exit(2)
    _run(_uv(), "build", "--quiet", "--build-constraints", BUILD_CONSTRAINTS, "--out-dir", DIST, ROOT)
    (sdist,), (wheel,) = DIST.glob("*.tar.gz"), DIST.glob("*.whl")
    tools = ensure_env(LINT_LINE)
    _log(f"twine check --strict {sdist.name} {wheel.name}")
    _run(tools, "-m", "twine", "check", "--strict", sdist, wheel)
    _log(f"check-wheel-contents {wheel.name}")
    _run(tools, "-m", "check_wheel_contents", wheel)
    _check_sdist(sdist)
    return sdist, wheel


def _check_sdist(sdist: Path) -> None:
    """The sdist holds the license, the docs, the tests, the example DAGs and the constraints files."""
    with tarfile.open(sdist) as tar:
        held = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    groups = {
        "docs": [
            "LICENSE",
            "README.md",
            "CHANGELOG.md",
            *(str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("docs/*.md"))),
        ],
        "tests": [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("*.py"))],
        "example_dags": [str(p.relative_to(ROOT)) for p in sorted((ROOT / "example_dags").glob("*.py"))],
        "constraints": [str(p.relative_to(ROOT)) for p in sorted(CONSTRAINTS.glob("*.txt"))],
    }
    missing = [name for names in groups.values() for name in names if name not in held]
    if missing:
        _log(f"{sdist.name} lacks: {', '.join(missing)}")
        sys.exit(1)
    counts = ", ".join(f"{len(names)} {group}" for group, names in groups.items())
    _log(f"{sdist.name} holds all of: {counts}")


#: The lines whose clean environment gets the built wheel (tests/packaging runs there).
WHEEL_LINES = ("3.3.2", "2.11.2")


def _wheel_envs(pytest_args: list[str]) -> dict[str, dict[str, str]]:
    """For a whole run (no arguments), or one naming tests/packaging or a folder holding it: build,
    install the wheel into a clean venv per selected WHEEL_LINES line, and return the variables that
    line's pytest run gets for it."""
    packaging = ROOT / "tests" / "packaging"
    paths = [(ROOT / arg.split("::")[0]).resolve() for arg in pytest_args if not arg.startswith("-")]
    if pytest_args and not any(
        path == packaging or path in packaging.parents or packaging in path.parents for path in paths
    ):
        return {}
    versions = [version for version in _versions() if version in WHEEL_LINES]
    if not versions:
        return {}
    sdist, wheel = _build()
    return {
        version: {"LOCALLEADS_WHEEL_PYTHON": str(_wheel_env(version, wheel)), "LOCALLEADS_SDIST": str(sdist)}
        for version in versions
    }


def _wheel_env(version: str, wheel: Path) -> Path:
    """A clean .venvs/wheel-airflow-<version>: the built wheel and that Airflow, as the README installs them."""
    env_dir = VENVS / f"wheel-airflow-{version}"
    python = _bin(env_dir, "python")
    lock = _locked(version)
    uv = _uv()
    _log(f"Installing {wheel.name} into a clean {env_dir.relative_to(ROOT)} (-c {lock.relative_to(ROOT)})")
    _run(uv, "venv", "--quiet", "--clear", "--python", sys.executable, env_dir)
    install = [uv, "pip", "install", "--quiet", "--python", python, "--refresh-package", PROJECT]
    _run(*install, wheel, f"apache-airflow=={version}", "-c", lock)
    return python


def cmd_build(_args: list[str]) -> int:
    _build()
    return 0


def cmd_demo(args: list[str]) -> int:
    version = _versions()[0]
    python = ensure_env(version)
    env = {**os.environ, **LINES.get(version, Line()).env}
    return _run(python, ROOT / "scripts" / "demo.py", *args, env=env, check=False)


COMMANDS = {"demo": cmd_demo, "test": cmd_test, "lock": cmd_lock, "build": cmd_build}


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        print(f"Python 3.11+ is required, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
