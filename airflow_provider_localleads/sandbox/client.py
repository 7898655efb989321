"""Drive a sandbox running in another process through its admin API (``urllib`` only).

For a DAG task that stands in for real work, or a benchmark that resets the request log: the same
typed controls as :class:`~.server.SandboxServer`, each sent as the request its entry in
:data:`.controls.CONTROLS` describes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

from airflow_provider_localleads.sandbox.controls import CONTROLS, SandboxControls
from airflow_provider_localleads.sandbox.state import InsufficientCredits
from airflow_provider_localleads.sandbox.wire import ADMIN_PREFIX, JSON_TYPE, json_bytes

__all__ = ["SandboxClient", "SandboxError"]


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked (not reachable, or an unexpected admin answer)."""


class SandboxClient(SandboxControls):
    """Drive a sandbox in another process through its ``/_sandbox/`` endpoints (``urllib`` only).

    For a DAG task that stands in for real work: ``SandboxClient(url).spend(12, "Lead search: ...")``.
    Errors mirror the in-process API: ``ValueError`` for bad input (HTTP 400), ``InsufficientCredits``
    (409), ``KeyError`` for an unknown transaction, :class:`SandboxError` for anything else, including an
    unreachable sandbox. Environment proxies are bypassed: the sandbox is local by design.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http(s) base URL such as http://127.0.0.1:8765, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<SandboxClient {self.url}>"

    def _control(self, name: str, /, **kwargs: Any) -> Any:
        """Send control ``name`` as its admin request and turn the answer back into its result."""
        control = CONTROLS[name]
        if control.route is None:
            raise SandboxError(f"{name} has no admin endpoint; call it on the SandboxServer or SandboxState")
        route = control.route.format(**{field: quote(kwargs[field], safe="") for field in control.path_fields})
        rest = {field: value for field, value in kwargs.items() if field not in control.path_fields}
        path, payload = ADMIN_PREFIX + route, None
        if control.verb == "POST":
            payload = control.encode(rest)
        elif query := {field: value for field, value in rest.items() if value is not None}:
            path += "?" + urlencode(query)
        return control.result(self._send(control.verb, path, payload))

    def _send(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json_bytes(dict(payload))
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": JSON_TYPE, "Accept": JSON_TYPE},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                message = _error_message(exc.read()) or exc.reason
            if exc.code == 400:
                raise ValueError(message) from None
            if exc.code == 409:
                raise InsufficientCredits(message) from None
            if exc.code == 404 and path.startswith(ADMIN_PREFIX + "transactions/"):
                raise KeyError(message) from None
            raise SandboxError(f"{method} {self.url}{path} failed with HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SandboxError(f"could not reach the LocalLeads sandbox at {self.url}: {reason}") from exc
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise SandboxError(f"{method} {self.url}{path} returned a body that is not JSON") from exc
        if not isinstance(decoded, dict) or decoded.get("success") is not True or "data" not in decoded:
            raise SandboxError(f"{method} {self.url}{path} returned an unexpected body: {decoded!r:.200}")
        return decoded

    # -- the controls with no twin on the server object ------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Balance, number of transactions, queued faults and request count."""
        return cast("dict[str, Any]", self._control("snapshot"))

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Recorded API requests (dicts like :meth:`RecordedRequest.to_json`), optionally for one path."""
        return cast("list[dict[str, Any]]", self._control("requests", path=path))


def _error_message(raw: bytes) -> str | None:
    try:
        decoded = json.loads(raw)
    except ValueError:
        return None
    if isinstance(decoded, dict):
        error = decoded.get("error")
        if isinstance(error, str):
            return error
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return None
