"""Validation of task arguments shared by the operator, the sensor and require_credits.

At DAG-parse time a bad value is a ValueError (the DAG does not load); once rendered, when the task
runs, it is LocalLeadsInvalidArgumentError, which fails without retrying.
"""

from __future__ import annotations

from airflow_provider_localleads.client.values import whole_number
from airflow_provider_localleads.exceptions import LocalLeadsInvalidArgumentError


def check_on_insufficient(value: object, *, owner: str) -> None:
    """Refuse anything but ``"fail"`` or ``"skip"`` (never templated: checked where it is given)."""
    if value not in ("fail", "skip"):
        raise ValueError(f"{owner}: on_insufficient must be 'fail' or 'skip', got {value!r}")


def is_template(value: object) -> bool:
    """A string Airflow will render (so it can only be checked once rendered, when the task runs)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def parse_estimated_cost(value: object, *, task_id: str) -> int:
    """The rendered ``estimated_cost`` as a whole number >= 0 (templates render to strings: ``"50"`` is 50),
    else a non-retried error."""
    cost = whole_number(value)
    if cost is None or cost < 0:
        raise LocalLeadsInvalidArgumentError(
            f"Task {task_id!r}: estimated_cost must render to a non-negative whole number of credits "
            f"(e.g. 50 or '{{{{ params.cost }}}}'), got {value!r} ({type(value).__name__}). Fix the value "
            "or the template/params that produce it"
        )
    return cost


def check_estimated_cost(value: object, *, task_id: str) -> None:
    """At DAG-parse time, refuse a literal ``estimated_cost`` with the message it would fail with at run
    time; what Airflow renders or resolves (a template, CostFromHistory, an XComArg) is checked then."""
    if is_template(value) or hasattr(value, "template_fields") or hasattr(value, "resolve"):
        return
    try:
        parse_estimated_cost(value, task_id=task_id)
    except LocalLeadsInvalidArgumentError as err:
        raise ValueError(str(err)) from None


def parse_optional_count(
    value: object, *, field: str, minimum: int, task_id: str, at_parse: bool = False
) -> int | None:
    """``None`` (off), or a whole number >= ``minimum`` (a rendered ``"30"`` is 30); at parse time
    (``at_parse``) a template is let through, to be checked once rendered."""
    if value is None or (at_parse and is_template(value)):
        return None
    number = whole_number(value)
    if number is not None and number >= minimum:
        return number
    kind = "positive" if minimum == 1 else "non-negative"
    message = (
        f"Task {task_id!r}: {field} must be None (off) or a {kind} whole number (>= {minimum}), got {value!r} "
        f"({type(value).__name__}). Fix the value or the template/params that produce it"
    )
    if at_parse:
        raise ValueError(message)
    raise LocalLeadsInvalidArgumentError(message)


def check_low_credits_hook(on_low_credits: object, warn_below: object, owner: str) -> None:
    if on_low_credits is None:
        return
    if not callable(on_low_credits):
        raise ValueError(
            f"{owner}: on_low_credits must be an Airflow notifier (e.g. SlackNotifier(...)) or a callable taking "
            f"the CreditBalance, got {on_low_credits!r} ({type(on_low_credits).__name__})"
        )
    if warn_below is None:
        raise ValueError(f"{owner}: on_low_credits is only called below warn_below; set warn_below=<credits> too")
