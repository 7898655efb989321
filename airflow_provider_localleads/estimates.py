"""``estimated_cost`` from the transaction history: what similar runs cost lately, plus a margin.

DAG files import this module and construct :class:`CostFromHistory` at parse time (it only validates),
so it imports no hook and no HTTP client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from airflow_provider_localleads.client.values import excerpt, iso_z, python_whole_number
from airflow_provider_localleads.exceptions import LocalLeadsInvalidArgumentError, NoCostHistoryError
from airflow_provider_localleads.planning.arguments import is_template, parse_estimated_cost
from airflow_provider_localleads.planning.usage import recent_deductions, utc_moment

if TYPE_CHECKING:
    import pendulum

    from airflow_provider_localleads.hooks.localleads import LocalLeadsHook

__all__ = ["STATISTICS", "CostEstimate", "CostFromHistory", "resolve_cost"]

STATISTICS = ("max", "mean", "p90")


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """An estimated cost and what it rests on, for the log (:meth:`describe`) and XCom (:meth:`to_dict`)."""

    #: The estimate in credits: ``ceil(basis_value * (1 + margin))``, or the default.
    cost: int
    pattern: str
    statistic: str
    runs_used: int
    #: When the oldest run used was made; for the default, the start of the window searched (UTC).
    since: pendulum.DateTime
    #: The statistic of the runs' ``|amount|``, before the margin; None for the default.
    basis_value: float | None
    #: The margin applied (0.0 for the default, which is used as given).
    margin: float
    from_default: bool

    def describe(self) -> str:
        """E.g. "max of 7 runs since 2026-09-03 matching 'Lead search: Dentists*' is 12 credits, +20% = 15"."""
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
        return {**asdict(self), "since": iso_z(self.since), "description": self.describe()}


class CostFromHistory:
    """``estimated_cost`` taken from what matching ``DEDUCTION`` runs cost lately (resolved when the task runs).

    ``ceil(statistic(|amount|) * (1 + margin))``, computed exactly: a margin of 0.1 is one tenth, so runs
    of 100 credits give 110, where float arithmetic would charge 111.

    :param match: a shell-style pattern (:func:`fnmatch.fnmatchcase`) the *whole* description must
        match: ``*`` any text, ``?`` one character, ``[seq]`` one of, ``[[]`` a literal ``[``. Case
        matters (the API writes its descriptions with fixed capitals, and a case-folding match would
        differ between operating systems); ``[Dd]entists`` matches either. Templated.
    :param runs: at most this many of the newest matching runs are used (>= 1).
    :param lookback: runs older than this (before the task's "now") are not used.
    :param statistic: ``"max"`` (the dearest run), ``"mean"``, or ``"p90"``: the nearest-rank 90th
        percentile (with fewer than 10 runs it is the max).
    :param margin: added on top, as a fraction (0.2 = +20%), >= 0.
    :param default: the cost when no run matches, used as given (no margin); None: fail instead,
        naming the pattern.

    Airflow renders ``match`` in place on this object, which every run of one DAG object shares: so
    ``match`` always reads as the template and what Airflow assigns is kept apart in :attr:`rendered_match`.
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
        if (count := python_whole_number(runs)) is None or count < 1:
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
        if default is not None and ((credits := python_whole_number(default)) is None or credits < 0):
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
        return self._template

    @match.setter
    def match(self, rendered: object) -> None:
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
        """Resolve against the history read through ``hook``: the listing stops at the ``runs``-th match or
        at the first transaction older than the lookback, so only the pages needed are read."""
        who = f"Task {task_id!r}: " if task_id else ""
        pattern = self._template if self.rendered_match is None else self.rendered_match
        if not isinstance(pattern, str) or not pattern or is_template(pattern):
            raise LocalLeadsInvalidArgumentError(
                f"{who}CostFromHistory match must render to a non-empty shell-style pattern, got "
                f"{pattern!r} from the template {self._template!r}. A Jinja template is rendered only when "
                "CostFromHistory is an operator's templated estimated_cost; fix the template or its params"
            )
        window_start = utc_moment(now) - self.lookback  # a naive ``now`` is refused before any request
        costs: list[int] = []
        oldest = window_start
        newest_other: str | None = None
        for txn in recent_deductions(hook.iter_transactions(), window_start):
            if not fnmatchcase(txn.description, pattern):
                newest_other = newest_other or txn.description
                continue
            costs.append(abs(txn.amount))
            oldest = txn.created_at
            if len(costs) >= self.runs:
                break
        if costs:
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
        example = f"the newest DEDUCTION there is {excerpt(newest_other, limit=80)!r}" if newest_other else None
        raise NoCostHistoryError(
            f"{who}No DEDUCTION transaction in the last {_duration(self.lookback)} (since "
            f"{window_start.date().isoformat()}) has a description matching {pattern!r} "
            f"({example or 'there is no DEDUCTION there'}). The whole description must match, case-sensitively: "
            "add a '*' where it goes on, fix the pattern or lookback, or give CostFromHistory a default=<credits> "
            "for when there is no history yet"
        )


def resolve_cost(
    estimated_cost: object, hook: LocalLeadsHook, task_id: str, now: datetime | None = None
) -> tuple[int, CostEstimate | None]:
    """The cost a task needs: a rendered number (no request, no estimate) or a CostFromHistory's estimate."""
    if isinstance(estimated_cost, CostFromHistory):
        estimate = estimated_cost.estimate(hook, now, task_id=task_id)
        return estimate.cost, estimate
    return parse_estimated_cost(estimated_cost, task_id=task_id), None


def _statistic(name: str, costs: list[int]) -> Fraction:
    if name == "max":
        return Fraction(max(costs))
    if name == "mean":
        return Fraction(sum(costs), len(costs))
    rank = math.ceil(Fraction(9 * len(costs), 10))  # p90, nearest rank: the ceil(0.9 n)-th smallest
    return Fraction(sorted(costs)[rank - 1])


def _fraction(value: float) -> Fraction:
    # repr is the shortest decimal form: 0.1 is exactly one tenth, not the float's binary value.
    return Fraction(repr(value))


def _number(value: float | Fraction) -> str:
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
