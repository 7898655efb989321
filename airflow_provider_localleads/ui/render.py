"""The credits page as one self-contained HTML document: no script, no asset from elsewhere.

Rendered from the page's JSON (``data.credits_json``), so the Airflow 3 app and the 2.11 view show the
same thing. Light and dark mode follow the browser (``prefers-color-scheme``). Everything that came
from the API or the request (descriptions, kinds, types, ids, the connection id, error messages) is
escaped with ``esc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pendulum

from airflow_provider_localleads.models import CreditUsage
from airflow_provider_localleads.ui.charts import burn_down_svg, esc, kinds_svg, spending_svg

__all__ = ["TITLE", "forecast_sentence", "render_page"]

TITLE = "LocalLeads credits"

_STYLE = """
:root{color-scheme:light dark;--fg:#1f2937;--muted:#6b7280;--bg:#ffffff;--card:#f9fafb;--line:#e5e7eb;
--accent:#2563eb;--bar:#0d9488;--warn:#b91c1c;--warn-bg:#fef2f2;--added:#ca8a04}
@media (prefers-color-scheme:dark){:root{--fg:#e5e7eb;--muted:#9ca3af;--bg:#111827;--card:#1f2937;
--line:#374151;--accent:#60a5fa;--bar:#2dd4bf;--warn:#fca5a5;--warn-bg:#3b1212;--added:#facc15}}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0;padding:16px 24px;max-width:800px}
h1{font-size:20px;margin:0 0 12px}h2{font-size:15px;margin:24px 0 8px}
form{margin:0 0 16px}select,button{font:inherit}
.error{color:var(--warn);background:var(--warn-bg);border:1px solid var(--warn);padding:8px 12px;border-radius:6px}
.muted{color:var(--muted)}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.balance td{font-size:18px}.balance .avail{font-weight:600}
.chart{width:100%;height:auto;background:var(--card);border-radius:6px}
.chart .grid{stroke:var(--line)}.chart .axis,.chart .label{fill:var(--muted);font-size:11px}
.chart .label{fill:var(--fg)}.chart .burn{fill:none;stroke:var(--accent);stroke-width:2}
.chart .forecast{stroke:var(--accent);stroke-width:2;stroke-dasharray:6 4}
.chart .now{stroke:var(--muted)}.chart .tick{stroke:none}.chart .reset{stroke:var(--warn);stroke-dasharray:3 3}
.chart .out{fill:var(--warn)}.chart .bar{fill:var(--bar)}.chart .added{fill:var(--added)}
"""


def _day(iso: str) -> str:
    return datetime.fromisoformat(iso).date().isoformat()


def _moment(iso: str) -> pendulum.DateTime:
    return pendulum.instance(datetime.fromisoformat(iso))


def forecast_sentence(usage: Mapping[str, Any]) -> str:
    """How long the credits last at the window's rate (``CreditUsage.summary``), as a sentence of plain text."""
    runs_out = usage["runs_out_at"]
    text = CreditUsage(
        spent=int(usage["spent"]),
        per_day=float(usage["per_day"]),
        deductions=int(usage["deductions"]),
        since=_moment(usage["since"]),
        next_reset_at=_moment(usage["next_reset_at"]),
        runs_out_at=None if runs_out is None else _moment(runs_out),
        days=int(usage["days"]),
        available_credits=int(usage["available_credits"]),
    ).summary()
    return text[:1].upper() + text[1:] + "."


def _picker(conn_id: str, connections: Sequence[str]) -> str:
    ids = list(connections) if conn_id in connections else [conn_id, *connections]
    options = "".join(
        f'<option value="{esc(cid)}"{" selected" if cid == conn_id else ""}>{esc(cid)}</option>' for cid in ids
    )
    note = (
        ""
        if connections
        else '<p class="muted">No connection of type localleads that you may read is stored in Airflow; '
        "create one under Admin &gt; Connections.</p>"
    )
    return (
        f'<form method="get"><label>Connection <select name="conn_id">{options}</select></label> '
        f'<button type="submit">Show</button></form>{note}'
    )


def _balance(balance: Mapping[str, Any]) -> str:
    return (
        '<table class="balance"><tr><th class="num">Monthly</th><th class="num">Bonus</th>'
        '<th class="num">Used</th><th class="num">Available</th></tr><tr>'
        f'<td class="num">{int(balance["monthly_credits"])}</td><td class="num">+ {int(balance["bonus_credits"])}</td>'
        f'<td class="num">\u2212 {int(balance["used_credits"])}</td>'
        f'<td class="num avail">= {int(balance["available_credits"])}</td></tr></table>'
        f"<p>Next reset: <strong>{esc(_day(balance['next_reset_at']))}</strong> "
        f"(monthly, on day {int(balance['reset_day'])}; last {esc(_day(balance['last_reset_at']))}).</p>"
    )


def _transactions(transactions: Sequence[Mapping[str, Any]]) -> str:
    if not transactions:
        return '<p class="muted">No transactions yet.</p>'
    rows = "".join(
        f"<tr><td>{esc(t['created_at'][:16].replace('T', ' '))}</td><td>{esc(t['type'])}</td>"
        f'<td class="num">{int(t["amount"]):+d}</td><td>{esc(t["description"])}</td></tr>'
        for t in transactions
    )
    return (
        '<table><tr><th>When (UTC)</th><th>Type</th><th class="num">Credits</th><th>Description</th></tr>'
        f"{rows}</table>"
    )


def _content(data: Mapping[str, Any]) -> str:
    usage = data["usage"]
    kinds = (
        kinds_svg(data["by_kind"])
        if data["by_kind"]
        else f'<p class="muted">Nothing spent in the last {int(usage["days"])} days.</p>'
    )
    return (
        f"<h2>Balance</h2>{_balance(data['balance'])}<p>{esc(forecast_sentence(usage))}</p>"
        f"<h2>Available credits and forecast</h2>{burn_down_svg(data)}"
        f"<h2>Spent per day</h2>{spending_svg(data['daily'])}"
        f"<h2>Spent by kind</h2>{kinds}"
        f"<h2>Latest transactions</h2>{_transactions(data['transactions'])}"
        f'<p class="muted">Fetched {esc(data["fetched_at"])}. Balances are reused for a minute and the '
        "history for five, so reloading this page costs the API nothing in between.</p>"
    )


def render_page(
    *, conn_id: str, connections: Sequence[str], data: Mapping[str, Any] | None = None, error: str | None = None
) -> str:
    """The whole page: the connection picker, then either the credits or ``error`` as a message."""
    body = f'<p class="error" role="alert">{esc(error)}</p>' if error is not None else ""
    if data is not None:
        body += _content(data)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{TITLE} \u00b7 {esc(conn_id)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{TITLE}</h1>{_picker(conn_id, connections)}{body}</body></html>"
    )
