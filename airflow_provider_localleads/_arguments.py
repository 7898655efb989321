"""Validation of task arguments shared by the operator and the sensor."""

from __future__ import annotations

from airflow_provider_localleads.exceptions import LocalLeadsInvalidArgumentError

ON_INSUFFICIENT_CHOICES = ("fail", "skip")


def parse_estimated_cost(value: object, *, task_id: str) -> int:
    """The rendered ``estimated_cost`` as a non-negative whole number, or a clear, non-retried error.

    Templates render to strings, so ``"50"`` (surrounding whitespace allowed) is 50. Refused:
    ``True``/``False`` (bool is an int in Python, never a credit count), floats and ``"1.5"``
    (credits are whole), negative numbers, and anything else.
    """
    cost: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        cost = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            cost = int(text)
    if cost is None or cost < 0:
        raise LocalLeadsInvalidArgumentError(
            f"Task {task_id!r}: estimated_cost must render to a non-negative whole number of credits "
            f"(e.g. 50 or '{{{{ params.cost }}}}'), got {value!r} ({type(value).__name__}). Fix the value "
            "or the template/params that produce it"
        )
    return cost
