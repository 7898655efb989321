"""The page's charts as inline SVG, drawn in Python from the page's JSON.

Why SVG strings and no chart library: many Airflow deployments reach no internet and run no
JavaScript bundle of ours, and a few lines and rectangles need none. Colours come from CSS classes,
so the page's stylesheet switches them for dark mode. Every text that came from the API goes through
``esc`` (inside SVG as much as in HTML: a description holding ``</svg>`` must stay text).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

__all__ = ["burn_down_svg", "esc", "kinds_svg", "spending_svg"]

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 20, 16, 30
DAY = 86_400.0


def esc(value: object) -> str:
    """``value`` as text that is safe in HTML and SVG, in element content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


@dataclass(frozen=True)
class _Frame:
    """Maps data coordinates (days from the chart's start, credits) to the SVG's pixels."""

    x_max: float
    y_min: float
    y_max: float
    height: float = HEIGHT

    def x(self, days: float) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * days / self.x_max, 1)

    def y(self, credits: float) -> float:
        span = (self.y_max - self.y_min) or 1.0
        return round(self.height - BOTTOM - (self.height - TOP - BOTTOM) * (credits - self.y_min) / span, 1)


def _nice_step(span: float, ticks: int = 4) -> int:
    raw = max(span / ticks, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    return int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def _y_grid(frame: _Frame) -> list[str]:
    step = _nice_step(frame.y_max - frame.y_min)
    start = math.ceil(frame.y_min / step) * step
    lines = []
    for value in range(start, int(frame.y_max) + 1, step):
        y = frame.y(value)
        lines.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}"/>')
        lines.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{value}</text>')
    return lines


def _svg(label: str, summary: str, body: Sequence[str], height: float = HEIGHT) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {round(height)}" role="img" aria-label="{esc(label)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{esc(label)}</title><desc>{esc(summary)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def burn_down_points(data: Mapping[str, Any]) -> tuple[datetime, list[tuple[datetime, int]]]:
    """The chart's start and the available credits over the window: (moment, credits), oldest first.

    Walked back from the available credits the usage was computed with (its history is the same
    snapshot), day by day through what was spent and added. A monthly reset's effect on the available
    credits is not in the history (unused monthly credits lapse), so the line starts at the last reset
    when one falls inside the window.
    """
    days = data["daily"]
    usage, balance = data["usage"], data["balance"]
    start = datetime.combine(date.fromisoformat(days[0]["date"]), datetime.min.time(), _when(usage["since"]).tzinfo)
    until = _when(usage["since"]) + timedelta(days=int(usage["days"]))
    last_reset = _when(balance["last_reset_at"])
    available = int(usage["available_credits"])
    points: list[tuple[datetime, int]] = [(until, available)]
    for index in range(len(days) - 1, -1, -1):
        if index < len(days) - 1:
            points.append((start + timedelta(days=index + 1), available))  # the end of that day
        if start <= last_reset and date.fromisoformat(days[index]["date"]) <= last_reset.date():
            points.append((min(last_reset, until), available))
            break
        available -= int(days[index]["added"]) - int(days[index]["spent"])
    else:
        points.append((start, available))
    return start, points[::-1]


def burn_down_svg(data: Mapping[str, Any]) -> str:
    """Available credits over the last 30 days, then the forecast at that rate up to the next reset."""
    start, points = burn_down_points(data)
    usage = data["usage"]
    now, available = points[-1]
    reset = _when(data["balance"]["next_reset_at"])
    runs_out = usage["runs_out_at"]
    if available <= 0:
        end: tuple[datetime, float] | None = None
    elif runs_out is not None:
        end = (_when(runs_out), 0.0)
    else:
        end = (reset, available - float(usage["per_day"]) * (reset - now).total_seconds() / DAY)

    def days(moment: datetime) -> float:
        return (moment - start).total_seconds() / DAY

    values = [credits for _, credits in points] + ([end[1]] if end else [])
    frame = _Frame(x_max=max(days(reset), days(now)) * 1.02, y_min=min(0, *values), y_max=max(1, *values) * 1.1)
    line = " ".join(f"{frame.x(days(t))},{frame.y(c)}" for t, c in points)
    body = _y_grid(frame)
    body.append(f'<polyline class="burn" points="{line}"/>')
    if end is not None:
        body.append(
            f'<line class="forecast" x1="{frame.x(days(now))}" y1="{frame.y(available)}" '
            f'x2="{frame.x(days(end[0]))}" y2="{frame.y(end[1])}"/>'
        )
    for moment, css, text, anchor in (
        (start, "tick", start.date().isoformat(), "start"),
        (now, "now", "now", "middle"),
        (reset, "reset", f"reset {reset.date().isoformat()}", "end"),
    ):
        x = frame.x(days(moment))
        body.append(f'<line class="{css}" x1="{x}" x2="{x}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>')
        body.append(f'<text class="axis" x="{x}" y="{HEIGHT - 10}" text-anchor="{anchor}">{esc(text)}</text>')
    if runs_out is not None and available > 0:
        x = frame.x(days(_when(runs_out)))
        body.append(
            f'<circle class="out" cx="{x}" cy="{frame.y(0)}" r="4"><title>runs out {esc(runs_out)}</title></circle>'
        )
    summary = f"{available} credits available now; next reset {reset.date().isoformat()}" + (
        f"; at the current rate they run out {runs_out}" if runs_out else ""
    )
    return _svg("Available credits, last 30 days and forecast", summary, body)


def spending_svg(daily: Sequence[Mapping[str, Any]]) -> str:
    """Credits spent per day as bars (each bar's tooltip also says what was added that day)."""
    peak = max([int(day["spent"]) for day in daily] + [1])
    frame = _Frame(x_max=len(daily), y_min=0, y_max=peak * 1.1, height=180)
    slot = (WIDTH - LEFT - RIGHT) / len(daily)
    body = []
    for index, day in enumerate(daily):
        spent, added = int(day["spent"]), int(day["added"])
        top = frame.y(spent)
        tip = f"{day['date']}: {spent} spent" + (f", {added} added" if added else "")
        body.append(
            f'<rect class="bar" x="{frame.x(index) + 1:.1f}" y="{top}" width="{max(slot - 2, 1):.1f}" '
            f'height="{round(frame.y(0) - top, 1)}"><title>{esc(tip)}</title></rect>'
        )
        if added:
            body.append(f'<circle class="added" cx="{frame.x(index + 0.5)}" cy="{frame.y(0) - 4}" r="3"/>')
    for index in (0, len(daily) - 1):
        anchor = "start" if index == 0 else "end"
        x = frame.x(index) if index == 0 else frame.x(index + 1)
        body.append(f'<text class="axis" x="{x}" y="170" text-anchor="{anchor}">{esc(daily[index]["date"])}</text>')
    total = sum(int(day["spent"]) for day in daily)
    return _svg("Credits spent per day", f"{total} credits spent over {len(daily)} days", _y_grid(frame) + body, 180)


def kinds_svg(by_kind: Mapping[str, int], label_chars: int = 26) -> str:
    """Spending by kind as horizontal bars, largest first; long kinds are shortened (full in the tooltip)."""
    rows = list(by_kind.items())
    peak = max([credits for _, credits in rows] + [1])
    row, label_w = 26, 200
    height = TOP + row * len(rows) + 8
    body = []
    for index, (kind, credits) in enumerate(rows):
        y = TOP + index * row
        short = kind if len(kind) <= label_chars else kind[: label_chars - 1] + "\u2026"
        width = max((WIDTH - label_w - 80) * credits / peak, 1)
        body.append(
            f"<g><title>{esc(kind)}: {credits} credits</title>"
            f'<text class="label" x="{label_w - 8}" y="{y + 16}" text-anchor="end">{esc(short)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{width:.1f}" height="{row - 8}"/>'
            f'<text class="axis" x="{label_w + width + 6:.1f}" y="{y + 16}">{credits}</text></g>'
        )
    return _svg("Credits spent by kind, last 30 days", f"{len(rows)} kinds", body, height)
