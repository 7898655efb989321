"""The controls over HTTP: ``/_sandbox/<route>``, dispatched from the table in :mod:`.controls`.

So a process other than the test's (a scheduler, a DAG task, a benchmark) can drive the sandbox. No
authentication: the server refuses a host beyond loopback unless told otherwise. The state's refusals
become statuses: ``ValueError``/``TypeError`` 400 with the message (it names the field),
``InsufficientCredits`` 409, ``KeyError`` 404. Answers are ``{"success": true, "data": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

from airflow_provider_localleads.sandbox.controls import CONTROLS, Control
from airflow_provider_localleads.sandbox.state import InsufficientCredits, SandboxState
from airflow_provider_localleads.sandbox.wire import ADMIN_PREFIX, Answer, error_answer, json_bytes

__all__ = ["ROUTES", "answer", "listing", "match"]


def _routes() -> dict[str, dict[str, Control]]:
    routes: dict[str, dict[str, Control]] = {}
    for control in CONTROLS.values():
        if control.route is None or control.shared:
            continue
        verbs = routes.setdefault(control.route, {})
        if control.verb in verbs:  # pragma: no cover - a mistake in the table
            raise AssertionError(f"{control.verb} /_sandbox/{control.route} is served twice")
        verbs[control.verb] = control
    return routes


#: route (under ``/_sandbox/``) -> HTTP method -> control.
ROUTES: Final[Mapping[str, Mapping[str, Control]]] = _routes()


def match(route: str) -> tuple[Mapping[str, Control], dict[str, str]]:
    """The controls served at ``route`` by HTTP method, and the arguments its path carries."""
    exact = ROUTES.get(route)
    if exact is not None:
        return exact, {}
    for pattern, verbs in ROUTES.items():
        head, brace, tail = pattern.partition("{")
        if brace and route.startswith(head) and len(route) > len(head):
            return verbs, {tail.removesuffix("}"): unquote(route[len(head) :])}
    return {}, {}


def listing() -> list[dict[str, Any]]:
    """Every admin route with its method, fields and what it does: the answer of ``GET /_sandbox/``."""
    return [control.describe() for verbs in ROUTES.values() for control in verbs.values()]


def answer(state: SandboxState, method: str, path: str, query: Mapping[str, str], raw_body: bytes) -> Answer:
    """Route an admin request to its control and shape the answer (``GET /_sandbox/`` lists the routes)."""
    route = path[len(ADMIN_PREFIX) :] if path.startswith(ADMIN_PREFIX) else ""
    if route == "" and method == "GET":
        return Answer(200, json_bytes({"success": True, "data": listing()}))
    verbs, path_args = match(route)
    if not verbs:
        return error_answer(404, f"Not found; GET {ADMIN_PREFIX} lists the admin routes and their fields")
    control = verbs.get(method)
    if control is None:
        allowed = ", ".join(sorted(verbs))
        message = f"Method {method} not allowed here ({allowed}); GET {ADMIN_PREFIX} lists the routes"
        return error_answer(405, message, {"Allow": allowed})
    try:
        body = json.loads(raw_body) if raw_body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error_answer(400, f"request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error_answer(400, "request body must be a JSON object")
    try:
        kwargs = control.from_admin(path_args, query, body)
        data = control.data(state, control.call(state, kwargs), kwargs)
    except InsufficientCredits as exc:
        return error_answer(409, str(exc))
    except KeyError as exc:
        return error_answer(404, str(exc.args[0]) if exc.args else "Not found")
    except (TypeError, ValueError) as exc:
        return error_answer(400, str(exc))
    payload: dict[str, Any] = {"success": True, "data": data}
    if control.meta is not None:
        payload["meta"] = control.meta(state, kwargs)
    return Answer(control.status, json_bytes(payload))
