"""Validation of task arguments shared by the operator and the sensor."""

from __future__ import annotations

from airflow_provider_localleads.client.values import whole_number
from airflow_provider_localleads.exceptions import LocalLeadsInvalidArgumentError

ON_INSUFFICIENT_CHOICES = ("fail", "skip")


def parse_estimated_cost(value: object, *, task_id: str) -> int:
    """The rendered ``estimated_cost`` as a non-negative whole number, or a clear, non-retried error.

    Templates render to strings, so ``"50"`` (surrounding whitespace allowed) is 50. Refused:
    ``True``/``False`` (bool is an int in Python, never a credit count), floats and ``"1.5"``
    (credits are whole), negative numbers, and anything else.
    """
    cost = whole_number(value)
    if cost is None or cost < 0:
        raise LocalLeadsInvalidArgumentError(
            f"Task {task_id!r}: estimated_cost must render to a non-negative whole number of credits "
            f"(e.g. 50 or '{{{{ params.cost }}}}'), got {value!r} ({type(value).__name__}). Fix the value "
            "or the template/params that produce it"
        )
    return cost


def is_template(value: object) -> bool:
    """A string Airflow will render (so it can only be checked once rendered, when the task runs)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def parse_optional_count(
    value: object, *, field: str, minimum: int, task_id: str, at_parse: bool = False
) -> int | None:
    """``None`` (off), or a whole number >= ``minimum`` (a rendered ``"30"`` is 30).

    At parse time (``at_parse``) a template is let through to be checked when rendered, and a bad value
    is a ValueError (the DAG does not load); when the task runs it is LocalLeadsInvalidArgumentError,
    which fails without retrying.
    """
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
