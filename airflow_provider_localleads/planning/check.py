"""The credit check itself: "does the balance cover this cost?", its words, and what happens if not.

Shared by :class:`~airflow_provider_localleads.operators.credits.CheckCreditsOperator` and
:meth:`LocalLeadsHook.require_credits <airflow_provider_localleads.hooks.localleads.LocalLeadsHook.require_credits>`,
so a pre-flight task and the paid task that checks for itself fail with the same message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_localleads.planning.arguments import ON_INSUFFICIENT_CHOICES

if TYPE_CHECKING:
    from airflow_provider_localleads.models import CreditBalance, CreditUsage

__all__ = [
    "check_credit_request",
    "enforce_credits",
    "enough_message",
    "insufficient_credits_message",
    "shortfall_message",
    "waiting_message",
    "with_forecast",
]


def with_forecast(text: str, forecast: CreditUsage | None) -> str:
    """``text``, and when a forecast was read (``forecast_days``), how long the credits last at the recent rate."""
    return text if forecast is None else f"{text}; {forecast.summary()}"


def enough_message(cost: int, balance: CreditBalance, forecast: CreditUsage | None = None) -> str:
    """The success line of the operator and the sensor."""
    return with_forecast(f"Enough LocalLeads credits: needs {cost}, {balance.summary()}", forecast)


def waiting_message(cost: int, balance: CreditBalance) -> str:
    """The sensor's line while it waits (never with a forecast: that would cost requests at every poke)."""
    return f"Waiting for LocalLeads credits: needs {cost}, {balance.summary()}"


def shortfall_message(cost: int, balance: CreditBalance, forecast: CreditUsage | None = None) -> str:
    """What is missing: needed vs available and when credits reset (the operator logs it when skipping)."""
    return with_forecast(f"Not enough LocalLeads credits: needs {cost} credits, {balance.summary()}", forecast)


def insufficient_credits_message(cost: int, balance: CreditBalance, forecast: CreditUsage | None = None) -> str:
    """The message of :class:`~airflow_provider_localleads.exceptions.InsufficientCreditsError`: the
    shortfall and what to do about it."""
    return (
        f"{shortfall_message(cost, balance, forecast)}. Top up, lower estimated_cost, wait for the reset, or use "
        "on_insufficient='skip' (or CreditsSensor) to skip/wait instead of failing"
    )


def check_credit_request(cost: object, on_insufficient: object) -> int:
    """``cost`` as a whole number >= 0, once ``on_insufficient`` is known to be valid (before any request)."""
    if on_insufficient not in ON_INSUFFICIENT_CHOICES:
        raise ValueError(f"on_insufficient must be 'fail' or 'skip', got {on_insufficient!r}")
    if type(cost) is not int or cost < 0:
        raise ValueError(
            f"cost must be a whole number of credits >= 0, got {cost!r} ({type(cost).__name__}); "
            "for a cost from the history pass CostFromHistory(...).estimate(hook).cost"
        )
    return cost


def enforce_credits(balance: CreditBalance, cost: int, on_insufficient: str) -> None:
    """Return if ``balance`` covers ``cost``; else fail without retrying (``"fail"``) or skip (``"skip"``)."""
    if balance.can_afford(cost):
        return
    if on_insufficient == "skip":
        from airflow.providers.common.compat.sdk import AirflowSkipException

        raise AirflowSkipException(shortfall_message(cost, balance))
    from airflow_provider_localleads.exceptions import InsufficientCreditsError

    raise InsufficientCreditsError(insufficient_credits_message(cost, balance))
