"""A real HTTP server on loopback that speaks the LocalLeads Credits API: start, stop, where it is.

Why a real server and not a mocked ``requests`` call: the provider's hook, its retries, timeouts,
connection reuse and the async trigger all run unchanged against it, in this process (a pytest
fixture) or in another one (``python -m airflow_provider_localleads.sandbox`` next to a scheduler).

Standard library only (``http.server``), so it costs nothing to ship and nothing to import. The wire
contract is in :mod:`.api`; controls live under ``/_sandbox/`` (:mod:`.admin`; no auth: the server
refuses to listen beyond loopback unless told to) and :class:`SandboxClient` wraps them for code in
another process, e.g. a DAG task that "spends" credits the way a real search would.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self, cast

from airflow_provider_localleads.sandbox.client import SandboxClient
from airflow_provider_localleads.sandbox.controls import SandboxControls, invoke
from airflow_provider_localleads.sandbox.handler import SandboxHTTPServer
from airflow_provider_localleads.sandbox.requestlog import RecordedRequest
from airflow_provider_localleads.sandbox.state import SandboxState

__all__ = ["DEFAULT_API_KEY", "SandboxServer", "is_loopback_host"]

log = logging.getLogger(__name__)

DEFAULT_API_KEY: Final = "sandbox-key"


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``). Names other than ``localhost``
    count as remote: resolving them could point anywhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SandboxServer(SandboxControls):
    """The LocalLeads Credits API on loopback, served from a daemon thread.

    >>> with SandboxServer() as sandbox:                     # port 0: any free port
    ...     sandbox.set_balance(used=120)
    ...     sandbox.rate_limit_next(retry_after="2")
    ...     os.environ["AIRFLOW_CONN_LOCALLEADS_DEFAULT"] = sandbox.connection_json()

    Controls (``set_balance``, ``spend``, ``top_up``, ``reset_month``, the faults, the request log) are
    the :class:`SandboxState`'s, run in process through :mod:`.controls`, so a test needs one object.
    ``stop()`` returns promptly even while a slow fault is sleeping. A stopped server may be started
    again: it rebinds the same port, which simulates an outage and recovery.

    The admin endpoints have no authentication, so a host other than loopback is refused unless
    ``allow_remote=True`` (for a container or VM whose port is forwarded; the API key still guards
    the API).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        state: SandboxState | None = None,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"host {host!r} is not a loopback address; the sandbox's admin endpoints are "
                "unauthenticated, so pass allow_remote=True only if the network is trusted"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer between 0 and 65535, got {port!r}")
        if (
            not isinstance(api_key, str)
            or not api_key
            or not api_key.isascii()
            or not api_key.isprintable()
            or any(ch.isspace() for ch in api_key)
        ):
            raise ValueError("api_key must be a non-empty string of visible ASCII characters")
        self._host = host.strip("[]")
        self._port = port
        self._api_key = api_key
        self.state = state if state is not None else SandboxState()
        self._httpd: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns ``self``. Raises ``OSError`` if the port is taken."""
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("the sandbox is already running")
            httpd = SandboxHTTPServer((self._host, self._port), self)
            self._port = httpd.server_port  # port 0 -> the real one; a restart reuses it
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},  # how long shutdown() may wait for the loop
                name=f"localleads-sandbox:{self._port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        log.debug("LocalLeads sandbox listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the listening socket and cut open connections; idempotent.

        Slow faults wait on the stop event, so a request sleeping in one is abandoned at once (its
        client sees the connection close) instead of holding ``stop()`` for the whole delay.
        """
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout)
        log.debug("LocalLeads sandbox on port %s stopped", self._port)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port else f"{self._host}:<not started>"
        return f"<SandboxServer {where} {'running' if self.running else 'stopped'}>"

    # -- addressing --------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (known after the first ``start()`` when constructed with port 0)."""
        if not self._port:
            raise RuntimeError("the sandbox has no port yet; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``: what goes in the connection's ``host``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        return self._api_key

    def connection_json(self, conn_type: str = "localleads", extra: Mapping[str, Any] | None = None) -> str:
        """JSON for ``AIRFLOW_CONN_<ID>`` pointing at this sandbox; ``extra`` e.g. ``{"max_retries": 0}``."""
        conn: dict[str, Any] = {"conn_type": conn_type, "host": self.url, "password": self._api_key}
        if extra:
            conn["extra"] = dict(extra)
        return json.dumps(conn)

    def client(self, timeout: float = 10.0) -> SandboxClient:
        """A :class:`SandboxClient` for this server (e.g. to hand its URL to another process)."""
        return SandboxClient(self.url, timeout=timeout)

    # -- controls: in process, through the one table in .controls ----------------------------------------

    def _control(self, name: str, /, **kwargs: Any) -> Any:
        return invoke(self.state, name, kwargs)

    def add_transaction(
        self,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: sandbox",
        created_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Append one entry to the history only. See :meth:`SandboxState.add_transaction`."""
        return cast(
            "dict[str, Any]",
            self._control("add_transaction", type=type, amount=amount, description=description, created_at=created_at),
        )

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests served (method, path, query, auth_valid, status, fault), oldest first; never
        headers or the key."""
        return cast("list[RecordedRequest]", self._control("requests"))
