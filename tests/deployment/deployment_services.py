"""Processes the deployment test starts: a private PostgreSQL cluster, Redis, and any command as a service.

Nothing here knows about Airflow. Every service is started in a session of its own
(``start_new_session``), so the session id is the process id we started, and every process it ever
forks keeps that session, even one that moved to its own process group (Airflow's task runners do)
or was orphaned. Stopping or killing a service therefore means: every process of that session,
found in ``/proc``. ``ServiceSet`` stops whatever is still running at interpreter exit too.

Importable as ``deployment_services`` (tests/deployment has no ``__init__.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
REDIS_SERVER = "/usr/bin/redis-server"
#: Debian's packages, installed by .ci/run on CI.
DEBIAN_PACKAGES = "postgresql redis-server"


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL ``bin`` directory that has initdb and postgres, if any."""
    found = [Path(d) for d in glob.glob(POSTGRES_BIN_GLOB) if (Path(d) / "initdb").exists()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


def missing_binaries() -> str | None:
    """Why the deployment cannot start on this machine, or None."""
    missing = []
    if postgres_bin() is None:
        missing.append(f"PostgreSQL server binaries ({POSTGRES_BIN_GLOB}/initdb)")
    if not os.access(REDIS_SERVER, os.X_OK):
        missing.append(f"Redis ({REDIS_SERVER})")
    if not missing:
        return None
    return f"{' and '.join(missing)} not installed (Debian: apt-get install {DEBIAN_PACKAGES})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds.

    The timeout only bounds a hang (no assertion is about speed): keep it generous.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is ``sid`` (Linux ``/proc``)."""
    pids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        # Fields after the parenthesised command (which may contain spaces): state ppid pgrp session ...
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.split("/")[2]))
    return pids


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class Service:
    """One command running in its own session, its stdout and stderr in ``log``.

    ``discard_stdout``: for a command that prints something on stdout that must not land in a file.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | Path],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        discard_stdout: bool = False,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = env
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.discard_stdout = discard_stdout
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Service {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if self.discard_stdout else self._log_file,
            stderr=self._log_file,
            env=self.env,
            cwd=self.cwd,
            user=self.user,
            start_new_session=True,
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        return [] if self.pid is None else session_pids(self.pid)

    def kill(self) -> None:
        """SIGKILL every process of the session at once, as when a machine or container dies."""
        if self.process is None:
            return
        _signal_all(self.pids(), signal.SIGKILL)
        self._reap(10)

    def stop(self, timeout: float = 20) -> None:
        """Ask the main process to stop, then SIGKILL whatever is left of the session."""
        if self.process is None:
            return
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        _signal_all(self.pids(), signal.SIGKILL)
        self._reap(10)

    def _reap(self, timeout: float) -> None:
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ServiceSet:
    """The services of one deployment; stops them in reverse order, at the latest at interpreter exit."""

    def __init__(self) -> None:
        self.services: list[Service] = []
        atexit.register(self.stop_all)

    def add(self, service: Service) -> Service:
        self.services.append(service)
        return service.start()

    def stop_all(self) -> None:
        while self.services:
            service = self.services.pop()
            with contextlib.suppress(Exception):
                service.stop()

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)


def owned_tempdir(prefix: str, user: str | None) -> Path:
    """A fresh directory under the system temp dir, owned by ``user`` (PostgreSQL refuses to run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if user is not None:
        shutil.chown(path, user=user, group=user)
    return path


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with its own data directory, port and password.

    Run as root (CI), the server runs as Debian's ``postgres`` user: initdb and postgres refuse root.
    Durability is switched off: the cluster lives for one test session.
    """

    DATABASE = "airflow"
    USER = "airflow"

    def __init__(self, services: ServiceSet, log_dir: Path) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError(missing_binaries() or "PostgreSQL not found")
        self.bindir = bindir
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.root = owned_tempdir("localleads-deploy-pg-", self.run_as)
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.log = log_dir / "postgres.log"
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            shutil.chown(pwfile, user=self.run_as)
        self._run(
            "initdb", "-D", self.root / "data", "-U", self.USER, "--pwfile", pwfile, "-E", "UTF8",
            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        argv = [
            bindir / "postgres", "-D", self.root / "data", "-h", "127.0.0.1", "-p", str(self.port), "-k", self.root,
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=300",
        ]  # fmt: skip
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for Airflow's pooled connections.
        service = Service("postgres", argv, self.log, cwd=self.root, user=self.run_as, stop_signal=signal.SIGINT)
        self.service = services.add(service)
        wait_until(self._accepting, 60, f"PostgreSQL on port {self.port}\n{self.service.tail()}")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, self.DATABASE)

    def _run(self, tool: str, *args: str | Path) -> str:
        result = subprocess.run(
            [str(self.bindir / tool), *map(str, args)],
            capture_output=True,
            text=True,
            user=self.run_as,
            cwd=self.root,
            env={**os.environ, "PGPASSWORD": self.password},
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def _accepting(self) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            cwd=self.root,
            check=False,
        )
        return result.returncode == 0

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.USER}:{self.password}@127.0.0.1:{self.port}/{self.DATABASE}"

    def connect(self) -> Any:
        """A psycopg2 connection in autocommit mode (the test only reads, and inspects as it goes)."""
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.USER, password=self.password, dbname=self.DATABASE
        )
        conn.autocommit = True
        return conn

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """Redis on 127.0.0.1 with its own port and password, no persistence (nothing written to disk)."""

    def __init__(self, services: ServiceSet, log_dir: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(16)
        argv = [
            REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--requirepass", self.password, "--dir", log_dir,
        ]  # fmt: skip
        self.service = services.add(Service("redis", argv, log_dir / "redis.log"))
        wait_until(self._ping, 30, f"Redis on port {self.port}\n{self.service.tail()}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                answer = b""
                while b"+PONG" not in answer and b"-" not in answer:
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    answer += chunk
                return b"+PONG" in answer
        except OSError:
            return False

    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


def _decode_address(hex_address: str) -> str:
    """``0100007F:1F90`` (``/proc/net/tcp``) or its IPv6 form to ``127.0.0.1:8080``."""
    import ipaddress

    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    return f"{address}:{int(port, 16)}" if address.version == 4 else f"[{address}]:{int(port, 16)}"


def listening_sockets(pids: Sequence[int]) -> list[tuple[int, str]]:
    """``(pid, "address:port")`` of every TCP socket in LISTEN state held by one of ``pids``."""
    listening: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    listening[fields[9]] = _decode_address(fields[1])
    found = []
    for pid in pids:
        for fd in glob.glob(f"/proc/{pid}/fd/*"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in listening:
                    found.append((pid, listening[target[8:-1]]))
    return found
