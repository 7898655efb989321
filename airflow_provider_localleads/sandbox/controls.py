"""Every sandbox control, defined once: the table, and the typed methods built on it.

A control (``spend``, ``inject``, ``request_count``...) is a :class:`SandboxState` method. Its entry in
:data:`CONTROLS` says where it sits in the admin API under ``/_sandbox/`` and how its admin JSON is
shaped; its arguments are the state method's own signature, so the admin routes accept exactly the
fields the method takes (required = no default). From that one table:

* :mod:`.admin` serves the routes (``POST /_sandbox/spend`` -> ``state.spend(**body)``);
* :class:`SandboxControls` gives :class:`~.server.SandboxServer` (in process) and
  :class:`~.client.SandboxClient` (over HTTP) the same typed methods, each a one-line call of their
  single ``_control(name, **kwargs)`` primitive.

Validation and behaviour live in the state (and :class:`~.faults.Fault`) alone; the admin only refuses
unknown or missing fields.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from airflow_provider_localleads.sandbox.faults import Fault, FaultShortcuts
from airflow_provider_localleads.sandbox.requestlog import RecordedRequest
from airflow_provider_localleads.sandbox.state import SandboxState
from airflow_provider_localleads.sandbox.wire import ADMIN_PREFIX

__all__ = ["CONTROLS", "Control", "SandboxControls", "check_fields", "invoke"]

Kwargs = Mapping[str, Any]


def check_fields(body: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> None:
    """Refuse unknown keys (a typo like ``ammount`` must not be silently ignored) and missing ones."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    for name in required:
        if body.get(name) is None:
            raise ValueError(f"{name} is required")


def _as_is(state: SandboxState, result: Any, kwargs: Kwargs) -> Any:
    return result


def _data(payload: Mapping[str, Any]) -> Any:
    return payload["data"]


def _jsonable(kwargs: Kwargs) -> dict[str, Any]:
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in kwargs.items()}


@dataclass(frozen=True)
class Control:
    """One control, called ``name`` on the server and the client (and, unless ``run`` says otherwise,
    on the state). ``route`` is its admin path under ``/_sandbox/`` (``{arg}`` takes that argument from
    the path) with HTTP method ``verb``; ``None`` for a control that runs in process only.

    ``run`` replaces the state method by a function ``(state, **kwargs)``. ``data`` and ``meta`` shape
    the admin answer from the result; ``result`` turns that answer back into the result (for the
    client). ``decode``/``encode`` replace the default request body (the arguments as JSON) where the
    wire form differs. ``shared``: the route is served by another control.
    """

    name: str
    route: str | None
    verb: str = "GET"
    run: Callable[..., Any] | None = None
    status: int = 200
    data: Callable[[SandboxState, Any, Kwargs], Any] = _as_is
    meta: Callable[[SandboxState, Kwargs], dict[str, Any]] | None = None
    result: Callable[[Mapping[str, Any]], Any] = _data
    decode: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    encode: Callable[[Kwargs], dict[str, Any]] = _jsonable
    shared: bool = False
    #: The body's fields where ``decode`` reads other ones than the method's arguments.
    wire_fields: tuple[str, ...] | None = None

    def call(self, state: SandboxState, kwargs: Kwargs) -> Any:
        if self.run is None:
            return getattr(state, self.name)(**kwargs)
        return self.run(state, **kwargs)

    @functools.cached_property
    def _parameters(self) -> list[inspect.Parameter]:
        function = getattr(SandboxState, self.name) if self.run is None else self.run
        return list(inspect.signature(function).parameters.values())[1:]  # without self / state

    @property
    def path_fields(self) -> tuple[str, ...]:
        """Arguments taken from the route's path (``transactions/{transaction_id}``)."""
        return tuple(p.name for p in self._parameters if self.route and "{" + p.name + "}" in self.route)

    @property
    def fields(self) -> tuple[str, ...]:
        """Arguments from the body (``POST``) or the query string (others), in signature order."""
        return tuple(p.name for p in self._parameters if p.name not in self.path_fields)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self._parameters if p.default is p.empty and p.name in self.fields)

    def describe(self) -> dict[str, Any]:
        """What ``GET /_sandbox/`` says of this control's route: method, path, fields, what it does."""
        function = getattr(SandboxControls, self.name, None) or getattr(SandboxState, self.name, None)
        doc = (inspect.getdoc(function) or "").split("\n\n")[0].replace("\n", " ").split(" See :")[0]
        return {
            "method": self.verb,
            "path": f"{ADMIN_PREFIX}{self.route}",
            "fields": list(self.wire_fields or self.fields),
            "required": [] if self.wire_fields else list(self.required),
            "does": doc,
        }

    def from_admin(self, path_args: Mapping[str, str], query: Mapping[str, str], body: Mapping[str, Any]) -> Kwargs:
        """The arguments of an admin request (``ValueError`` for an unknown or missing field)."""
        if self.decode is not None:
            return {**path_args, **self.decode(body)}
        if self.verb == "POST":
            check_fields(body, self.fields, self.required)
            return {**path_args, **body}
        return {**path_args, **{name: query[name] for name in self.fields if name in query}}


def _with_balance(state: SandboxState, transaction: Any, kwargs: Kwargs) -> dict[str, Any]:
    return {"transaction": transaction, "balance": state.balance()}


def _transaction(payload: Mapping[str, Any]) -> Any:
    return payload["data"]["transaction"]


_FAULT_FIELDS: Final = ("kind", "status", "retry_after", "delay", "times", "path", "body", "content_type")


def _decode_fault(body: Mapping[str, Any]) -> dict[str, Any]:
    check_fields(body, _FAULT_FIELDS)
    return {"fault": Fault.from_json(body), "times": body.get("times", 1)}


def _encode_fault(kwargs: Kwargs) -> dict[str, Any]:
    return {**kwargs["fault"].to_json(), "times": kwargs["times"]}


def _requests(state: SandboxState, path: str | None = None) -> list[RecordedRequest]:
    return [record for record in state.requests if path is None or record.path == path]


#: Every control, by name.
CONTROLS: Final[Mapping[str, Control]] = {
    control.name: control
    for control in (
        Control("snapshot", "state"),
        Control("balance", "balance"),
        Control("set_balance", "balance", "POST"),
        Control("spend", "spend", "POST", data=_with_balance, result=_transaction),
        Control("top_up", "top-up", "POST", data=_with_balance, result=_transaction),
        Control("reset_month", "reset-month", "POST", data=_with_balance, result=_transaction),
        Control("add_transaction", None),  # in process only
        Control("insert_transactions", "transactions", "POST", status=201),
        Control("delete_transaction", "transactions/{transaction_id}", "DELETE"),
        Control(
            "inject",
            "faults",
            "POST",
            status=201,
            data=lambda state, fault, kwargs: {**fault.to_json(), "times": kwargs["times"]},
            decode=_decode_fault,
            encode=_encode_fault,
            wire_fields=_FAULT_FIELDS,
        ),
        Control("pending_faults", "faults"),
        Control(
            "clear_faults",
            "faults",
            "DELETE",
            data=lambda state, dropped, kwargs: {"cleared": dropped},
            result=lambda payload: payload["data"]["cleared"],
        ),
        Control(
            "requests",
            "requests",
            run=_requests,
            data=lambda state, records, kwargs: [record.to_json() for record in records],
            meta=lambda state, kwargs: {"total": state.request_count(kwargs.get("path"))},
        ),
        # The same route as "requests": its answer's meta.total is the count.
        Control("request_count", "requests", shared=True, result=lambda payload: payload["meta"]["total"]),
        Control(
            "reset_request_log",
            "requests",
            "DELETE",
            data=lambda state, none, kwargs: {"cleared": True},
            result=lambda payload: None,
        ),
    )
}


def invoke(state: SandboxState, name: str, kwargs: Kwargs) -> Any:
    """Run control ``name`` on ``state`` in process."""
    return CONTROLS[name].call(state, kwargs)


class SandboxControls(FaultShortcuts):
    """The controls as typed methods, written once for the server and the client.

    Each is one call of ``_control(name, **kwargs)``, which a subclass implements: in process
    (:class:`~.server.SandboxServer`) or over the admin API (:class:`~.client.SandboxClient`). Errors
    are the state's: ``ValueError`` naming the field, ``InsufficientCredits``, ``KeyError``.
    """

    def _control(self, name: str, /, **kwargs: Any) -> Any:
        raise NotImplementedError

    def balance(self) -> dict[str, Any]:
        """The balance ``data`` exactly as ``GET /api/v1/credits/balance`` serves it."""
        return cast("dict[str, Any]", self._control("balance"))

    def set_balance(
        self,
        monthly: int | None = None,
        bonus: int | None = None,
        used: int | None = None,
        reset_day: int | None = None,
        last_reset_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Change only the given fields; returns the new balance. See :meth:`SandboxState.set_balance`."""
        return cast(
            "dict[str, Any]",
            self._control(
                "set_balance", monthly=monthly, bonus=bonus, used=used, reset_day=reset_day, last_reset_at=last_reset_at
            ),
        )

    def spend(self, amount: int, description: str = "Lead search: sandbox") -> dict[str, Any]:
        """Spend credits; returns the ``DEDUCTION`` transaction. ``InsufficientCredits`` if short."""
        return cast("dict[str, Any]", self._control("spend", amount=amount, description=description))

    def top_up(self, amount: int, description: str = "Bonus credits") -> dict[str, Any]:
        """Add bonus credits; returns the ``TOP_UP`` transaction. See :meth:`SandboxState.top_up`."""
        return cast("dict[str, Any]", self._control("top_up", amount=amount, description=description))

    def reset_month(self, at: datetime | str | None = None) -> dict[str, Any]:
        """Run the monthly reset; returns the ``MONTHLY_RESET`` transaction. See :meth:`SandboxState.reset_month`."""
        return cast("dict[str, Any]", self._control("reset_month", at=at))

    def insert_transactions(
        self,
        count: int = 1,
        *,
        type: str = "DEDUCTION",
        amount: int = -1,
        description: str = "Lead search: inserted",
        created_at: datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """Add ``count`` entries to the history only; returns them, oldest first.
        See :meth:`SandboxState.insert_transactions`."""
        return cast(
            "list[dict[str, Any]]",
            self._control(
                "insert_transactions",
                count=count,
                type=type,
                amount=amount,
                description=description,
                created_at=created_at,
            ),
        )

    def delete_transaction(self, transaction_id: str) -> dict[str, Any]:
        """Remove one entry from the history; ``KeyError`` if absent."""
        return cast("dict[str, Any]", self._control("delete_transaction", transaction_id=transaction_id))

    def inject(self, fault: Fault, times: int | None = 1) -> Fault:
        """Queue ``fault`` for the next ``times`` matching requests (``None``: until ``clear_faults``)."""
        self._control("inject", fault=fault, times=times)
        return fault

    def pending_faults(self) -> list[dict[str, Any]]:
        """Queued faults in order, each with ``times`` left (``None``: unlimited)."""
        return cast("list[dict[str, Any]]", self._control("pending_faults"))

    def clear_faults(self) -> int:
        """Drop every queued fault; returns how many entries were dropped."""
        return cast(int, self._control("clear_faults"))

    def request_count(self, path: str | None = None) -> int:
        """API requests served so far, all or to one ``path`` (exact, even past the log's cap)."""
        return cast(int, self._control("request_count", path=path))

    def reset_request_log(self) -> None:
        """Forget the recorded API requests and their counts."""
        self._control("reset_request_log")
