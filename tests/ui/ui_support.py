"""Shared values for the credits-page tests (importable as ``ui_support``: tests/ui has no __init__)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

#: "Now" for the page's clock: the window is 2026-08-21T12:00Z .. 2026-09-20T12:00Z.
NOW = datetime.fromisoformat("2026-09-20T12:00:00+00:00")
#: The billing cycle: reset on the 1st, last on 2026-09-01, next on 2026-10-01.
LAST_RESET = "2026-09-01T00:00:00Z"
CONN = "localleads_default"

#: ``add(type=, amount=, description=, days_ago=)``: one transaction in the sandbox's history.
AddTxn = Callable[..., dict[str, Any]]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
