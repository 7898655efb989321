"""``estimated_cost`` from the transaction history: what similar runs cost lately, plus a margin.

A pre-flight check is only as good as the cost it compares with, and the history already says what
similar runs cost ("Lead search: Dentists in Austin, TX (97 results)", -12)::

    CheckCreditsOperator(
        task_id="check_credits",
        estimated_cost=CostFromHistory("Lead search: {{ params.kind }}*", runs=10, margin=0.2),
    )

Constructing a :class:`CostFromHistory` only validates its arguments (DAG-parse time: no network, no
connection). It is resolved when the task runs, by :meth:`CostFromHistory.estimate` (or
:func:`resolve_cost`, which also takes a plain number), into a :class:`CostEstimate` that says what
the number rests on, for the log (:meth:`CostEstimate.describe`) and XCom (:meth:`CostEstimate.to_dict`).

Importing this module is cheap (no hook, no HTTP client): DAG files import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from airflow_provider_localleads.exceptions import LocalLeadsInvalidArgumentError, NoCostHistoryError

if TYPE_CHECKING:
    import pendulum

    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
    from airflow_provider_localleads.models import CreditTransaction

__all__ = ["STATISTICS", "CostEstimate", "CostFromHistory", "resolve_cost"]

#: How the costs of the matching runs become one number (see :class:`CostFromHistory`).
STATISTICS = ("max", "mean", "p90")


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """An estimated cost and what it rests on (the result of :meth:`CostFromHistory.estimate`)."""

    #: The estimate in credits: ``ceil(basis_value * (1 + margin))``, or the default.
    cost: int
    #: The rendered pattern the descriptions were matched against.
    pattern: str
    #: ``"max"``, ``"mean"`` or ``"p90"``.
    statistic: str
    #: How many matching runs the estimate rests on (0 for the default).
    runs_used: int
    #: When the oldest run used was made; for the default, the start of the window searched (UTC).
    since: pendulum.DateTime
    #: The statistic of the runs' ``|amount|``, before the margin; None for the default.
    basis_value: float | None
    #: The margin applied (0.0 for the default, which is used as given).
    margin: float
    #: True when no run matched and ``default`` was used.
    from_default: bool

    def describe(self) -> str:
        """The log line, e.g. "max of 7 runs since 2026-09-03 matching 'Lead search: Dentists*' is 12
        credits, +20% = 15"."""
        day = self.since.date().isoformat()
        if self.from_default or self.basis_value is None:
            return (
                f"no DEDUCTION since {day} matches {self.pattern!r}: using the default of {self.cost} credits"
                " (no margin)"
            )
        runs = f"{self.runs_used} run{'s' if self.runs_used != 1 else ''}"
        basis = f"{self.statistic} of {runs} since {day} matching {self.pattern!r} is {_number(self.basis_value)}"
        if not self.margin:
            return f"{basis} credits (no margin)"
        return f"{basis} credits, +{_number(_fraction(self.margin) * 100)}% = {self.cost}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for XCom: the estimate, its basis, and :meth:`describe`'s line as ``description``."""
        return {
            "cost": self.cost,
            "pattern": self.pattern,
            "statistic": self.statistic,
            "runs_used": self.runs_used,
            "since": self.since.in_timezone("UTC").isoformat().replace("+00:00", "Z"),
            "basis_value": self.basis_value,
            "margin": self.margin,
            "from_default": self.from_default,
            "description": self.describe(),
        }


class CostFromHistory:
    """``estimated_cost`` taken from what matching runs cost lately (resolved when the task runs).

    The runs are the ``DEDUCTION`` transactions whose ``description`` matches ``match``, newest first:
    at most ``runs`` of them, none older than ``lookback``. The estimate is
    ``ceil(statistic(|amount|) * (1 + margin))``, computed exactly (a margin of 0.1 is one tenth: runs
    of 100 credits give 110, where float arithmetic would charge 111). Only the pages of the history
    needed are read: the listing stops at the ``runs``-th match or at the first transaction older
    than the lookback.

    :param match: a shell-style pattern (:func:`fnmatch.fnmatchcase`) the *whole* description must
        match: ``*`` any text, ``?`` one character, ``[seq]`` one of, ``[[]`` a literal ``[``. Case
        matters (the API writes its descriptions with fixed capitals, and a case-folding match would
        differ between operating systems); ``[Dd]entists`` matches either. Templated: rendered by
        Airflow when this object is an operator's templated ``estimated_cost``.
    :param runs: at most this many of the newest matching runs are used (>= 1).
    :param lookback: runs older than this (before the task's "now") are not used.
    :param statistic: ``"max"`` (the dearest run), ``"mean"``, or ``"p90"``: the nearest-rank 90th
        percentile, the ``ceil(0.9 * n)``-th smallest of ``n`` costs (the smallest cost that at least
        90% of the runs did not exceed; with fewer than 10 runs it is the max).
    :param margin: added on top, as a fraction (0.2 = +20%), >= 0.
    :param default: the cost when no run matches, used as given (no margin); None: fail instead,
        naming the pattern.

    Templating: Airflow renders ``match`` in place on this object, which is shared by every run of
    one DAG object (``dag.test()`` twice in a process, map indexes). So reading ``match`` always gives
    the template as written, and what Airflow assigns is kept apart as :attr:`rendered_match`: each
    run renders from the template again, and the pattern a run used is in its :class:`CostEstimate`.
    """

    template_fields: Sequence[str] = ("match",)

    def __init__(
        self,
        match: str,
        runs: int = 10,
        lookback: timedelta = timedelta(days=90),
        statistic: str = "max",
        margin: float = 0.2,
        default: int | None = None,
    ) -> None:
        if not isinstance(match, str) or not match:
            raise ValueError(
                f"CostFromHistory: match must be a non-empty shell-style pattern such as 'Lead search: Dentists*', "
                f"got {match!r}"
            )
        if type(runs) is not int or runs < 1:
            raise ValueError(f"CostFromHistory: runs must be a whole number >= 1 (e.g. runs=10), got {runs!r}")
        if not isinstance(lookback, timedelta) or lookback <= timedelta(0):
            raise ValueError(
                f"CostFromHistory: lookback must be a positive timedelta (e.g. timedelta(days=90)), got {lookback!r}"
            )
        if statistic not in STATISTICS:
            raise ValueError(f"CostFromHistory: statistic must be 'max', 'mean' or 'p90', got {statistic!r}")
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin) or margin < 0:
            raise ValueError(
                f"CostFromHistory: margin must be a number >= 0, a fraction of the estimate (0.2 = +20%, 0 for "
                f"none), got {margin!r}"
            )
        if default is not None and (type(default) is not int or default < 0):
            raise ValueError(
                f"CostFromHistory: default must be None (fail when no run matches) or a whole number of credits "
                f">= 0, got {default!r}"
            )
        self._template = match
        self.rendered_match: object = None
        self.runs = runs
        self.lookback = lookback
        self.statistic = statistic
        self.margin = float(margin)
        self.default = default

    @property
    def match(self) -> str:
        """The pattern as written (a template or a plain pattern); Airflow renders from this each run."""
        return self._template

    @match.setter
    def match(self, rendered: object) -> None:
        # Airflow's template rendering assigns here; the template stays for the next run to render.
        self.rendered_match = rendered

    def __repr__(self) -> str:
        # Deterministic (DAG serialization stores str() of template fields): no ids, no timestamps.
        rendered = "" if self.rendered_match in (None, self._template) else f", rendered={self.rendered_match!r}"
        return (
            f"{type(self).__name__}(match={self._template!r}{rendered}, runs={self.runs}, lookback={self.lookback!r}, "
            f"statistic={self.statistic!r}, margin={self.margin!r}, default={self.default!r})"
        )

    def estimate(
        self, hook: LocalLeadsHook, now: datetime | None = None, *, task_id: str | None = None
    ) -> CostEstimate:
        """Resolve against the history read through ``hook`` (only the pages needed).

        :param now: the end of the window (default: now, UTC); the lookback counts back from it.
        :param task_id: named in errors.
        :raises NoCostHistoryError: no run matches and there is no ``default`` (fails without retrying).
        :raises LocalLeadsInvalidArgumentError: ``match`` rendered to something that is not a pattern.
        """
        from airflow_provider_localleads.planning.usage import utc_moment

        pattern = self._pattern(task_id)  # before any request
        return self._estimate(hook.iter_transactions(), utc_moment(now), pattern, task_id)

    def _pattern(self, task_id: str | None) -> str:
        pattern = self._template if self.rendered_match is None else self.rendered_match
        if not isinstance(pattern, str) or not pattern or "{{" in pattern or "{%" in pattern:
            raise LocalLeadsInvalidArgumentError(
                f"{_who(task_id)}CostFromHistory match must render to a non-empty shell-style pattern, got "
                f"{pattern!r} from the template {self._template!r}. A Jinja template is rendered only when "
                "CostFromHistory is an operator's templated estimated_cost; fix the template or its params"
            )
        return pattern

    def _estimate(
        self,
        transactions: Iterable[CreditTransaction],
        now: pendulum.DateTime,
        pattern: str,
        task_id: str | None,
    ) -> CostEstimate:
        from airflow_provider_localleads.planning.usage import recent_deductions

        window_start = now - self.lookback
        costs: list[int] = []
        oldest: pendulum.DateTime | None = None
        newest_other: str | None = None
        for txn in recent_deductions(transactions, window_start):
            if not fnmatchcase(txn.description, pattern):
                newest_other = newest_other or txn.description
                continue
            costs.append(abs(txn.amount))
            oldest = txn.created_at
            if len(costs) >= self.runs:
                break
        if not costs or oldest is None:
            return self._default(pattern, window_start, newest_other, task_id)
        basis = _statistic(self.statistic, costs)
        return CostEstimate(
            cost=math.ceil(basis * (1 + _fraction(self.margin))),
            pattern=pattern,
            statistic=self.statistic,
            runs_used=len(costs),
            since=oldest,
            basis_value=int(basis) if basis.denominator == 1 else float(basis),
            margin=self.margin,
            from_default=False,
        )

    def _default(
        self, pattern: str, window_start: pendulum.DateTime, example: str | None, task_id: str | None
    ) -> CostEstimate:
        if self.default is not None:
            return CostEstimate(
                cost=self.default,
                pattern=pattern,
                statistic=self.statistic,
                runs_used=0,
                since=window_start,
                basis_value=None,
                margin=0.0,
                from_default=True,
            )
        hint = f" (the newest DEDUCTION there is {_clip(example)!r})" if example else " (there is no DEDUCTION there)"
        raise NoCostHistoryError(
            f"{_who(task_id)}No DEDUCTION transaction in the last {_duration(self.lookback)} (since "
            f"{window_start.date().isoformat()}) has a description matching {pattern!r}{hint}. The whole "
            "description must match, case-sensitively: add a '*' where it goes on, fix the pattern or lookback, "
            "or give CostFromHistory a default=<credits> for when there is no history yet"
        )


def resolve_cost(
    estimated_cost: object, hook: LocalLeadsHook, task_id: str, now: datetime | None = None
) -> tuple[int, CostEstimate | None]:
    """The cost a task needs: a rendered number (as ``estimated_cost`` always was) or a CostFromHistory.

    A number is validated without any request (``"50"`` is 50; see ``parse_estimated_cost``) and has
    no estimate; a :class:`CostFromHistory` reads the history through ``hook``.
    """
    if isinstance(estimated_cost, CostFromHistory):
        estimate = estimated_cost.estimate(hook, now, task_id=task_id)
        return estimate.cost, estimate
    from airflow_provider_localleads.planning.arguments import parse_estimated_cost

    return parse_estimated_cost(estimated_cost, task_id=task_id), None


def _statistic(name: str, costs: list[int]) -> Fraction:
    if name == "max":
        return Fraction(max(costs))
    if name == "mean":
        return Fraction(sum(costs), len(costs))
    rank = math.ceil(Fraction(9 * len(costs), 10))  # p90, nearest rank: the ceil(0.9 n)-th smallest
    return Fraction(sorted(costs)[rank - 1])


def _fraction(value: float) -> Fraction:
    """``value`` as written (its shortest decimal form): 0.1 is exactly one tenth."""
    return Fraction(repr(value))


def _number(value: float | Fraction) -> str:
    """12 for a whole number, else at most two decimals (11.33)."""
    if Fraction(value).denominator == 1:
        return str(int(value))
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _duration(value: timedelta) -> str:
    if value % timedelta(days=1) == timedelta(0):
        return f"{value.days} day{'s' if value.days != 1 else ''}"
    if value % timedelta(hours=1) == timedelta(0):
        hours = value // timedelta(hours=1)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return str(value)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _who(task_id: str | None) -> str:
    return f"Task {task_id!r}: " if task_id else ""
