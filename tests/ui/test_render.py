"""The page's HTML: self-contained, escaped everywhere, the charts drawn from the data, errors as messages."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import pytest
from ui_support import CONN, NOW, AddTxn, Clock

from airflow_provider_localleads.sandbox import SandboxServer
from airflow_provider_localleads.ui.charts import burn_down_points
from airflow_provider_localleads.ui.data import CreditsData
from airflow_provider_localleads.ui.errors import describe_error
from airflow_provider_localleads.ui.render import render_page

HOSTILE = "</svg><script>alert(1)</script>: \"quoted\" & 'single' </svg>"


def load() -> dict[str, Any]:
    return CreditsData(clock=Clock()).credits(CONN)


def svgs(page: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML: a description breaking out of one would not parse (or add one)."""
    return [ET.fromstring(match) for match in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def test_the_page_has_no_script_and_no_asset_from_elsewhere(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-5, days_ago=1)
    page = render_page(conn_id=CONN, connections=[CONN], data=load())

    assert "<script" not in page.lower()
    assert not re.search(r"<link|<img|<iframe|\bsrc=|@import|url\(", page)
    assert re.findall(r"https?://[^\"'\s<]+", page) == ["http://www.w3.org/2000/svg"] * 3  # the SVG namespace
    assert "@media (prefers-color-scheme:dark)" in page
    assert sandbox.api_key not in page
    assert len(svgs(page)) == 3  # burn-down, per day, by kind


def test_descriptions_are_escaped_in_html_and_svg(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-5, description=HOSTILE, days_ago=1)
    add(amount=-3, description="Enrichment: <b>bold</b>", days_ago=1)
    page = render_page(conn_id=CONN, connections=[CONN], data=load())

    assert "<script" not in page
    assert "<b>" not in page
    assert "&lt;/svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quoted&quot; &amp; &#x27;single&#x27;" in page  # the transactions table
    charts = svgs(page)
    assert len(charts) == 3
    kinds = charts[2]
    labels = [el.text for el in kinds.iter("{http://www.w3.org/2000/svg}title")]
    assert "</svg><script>alert(1)</script>: 5 credits" in labels  # the kind, as text, whole in the tooltip


def test_the_connection_id_from_the_request_is_escaped() -> None:
    hostile = '"><script>x</script>'
    page = render_page(conn_id=hostile, connections=["a"], error=f"There is no connection {hostile!r}.")

    assert "<script" not in page
    assert page.count("&lt;script&gt;") == 4  # title, option value, option text, message


def test_balance_reset_and_forecast(sandbox: SandboxServer, add: AddTxn) -> None:
    for day in range(10):
        add(amount=-6, days_ago=day + 0.5)  # 60 in 30 days: 2 a day; 82 last until 2026-11-1 > the reset
    page = render_page(conn_id=CONN, connections=[CONN], data=load())
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))

    assert re.search(r"100\s+\+ 25\s+\u2212 43\s+= 82", text)
    assert "Next reset:  2026-10-01" in text
    assert "At the last 30 days' rate (2.0/day) these 82 credits last until the reset on 2026-10-01." in text


def test_runs_out_before_the_reset(sandbox: SandboxServer, add: AddTxn) -> None:
    sandbox.set_balance(used=115)  # 10 left, 2 a day: out on 2026-09-25
    for day in range(10):
        add(amount=-6, days_ago=day + 0.5)
    data = load()
    page = render_page(conn_id=CONN, connections=[CONN], data=data)

    assert data["usage"]["runs_out_at"] == "2026-09-25T12:00:00Z"
    assert "these 10 credits last until 2026-09-25, 5 days before the reset on 2026-10-01" in page
    assert '<circle class="out"' in page
    assert '<line class="forecast"' in page


def test_burn_down_walks_back_through_spending_and_top_ups(sandbox: SandboxServer, add: AddTxn) -> None:
    sandbox.set_balance(last_reset_at="2026-07-01T00:00:00Z", reset_day=1)  # no reset in the window
    add(amount=-10, days_ago=2)  # 2026-09-18
    add(type="TOP_UP", amount=50, description="Coupon", days_ago=1)  # 2026-09-19
    start, points = burn_down_points(load())

    values = {moment.date().isoformat(): credits for moment, credits in points}
    assert points[-1] == (NOW, 82)
    assert values["2026-09-20"] == 82  # the end of the 19th: after the top-up
    assert values["2026-09-19"] == 32  # the end of the 18th: before it, after the spend
    assert values["2026-09-18"] == 42
    assert points[0] == (start, 42)
    assert start.isoformat() == "2026-08-22T00:00:00+00:00"


def test_burn_down_starts_at_a_reset_inside_the_window(sandbox: SandboxServer, add: AddTxn) -> None:
    add(amount=-30, days_ago=25)
    add(type="MONTHLY_RESET", amount=100, description="Monthly credit reset", days_ago=19.5)
    add(amount=-4, days_ago=3)
    _, points = burn_down_points(load())

    assert points[0][0].isoformat() == "2026-09-01T00:00:00+00:00"  # the balance's last reset
    assert points[0][1] == 86
    assert points[-1] == (NOW, 82)
    assert min(moment for moment, _ in points) >= NOW - timedelta(days=20)


def test_an_empty_history_renders(sandbox: SandboxServer) -> None:
    page = render_page(conn_id=CONN, connections=[], data=load())

    assert "No transactions yet." in page
    assert "Nothing spent in the last 30 days." in page
    assert "No connection of type localleads that you may read" in page
    assert len(svgs(page)) == 2


# ------------------------------------------------------------------------------------------------ errors


def message_for(monkeypatch: pytest.MonkeyPatch, conn_json: str | None, conn_id: str = CONN) -> str:
    if conn_json is not None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json)
    try:
        CreditsData(clock=Clock()).credits(conn_id)
    except Exception as err:  # what the app does
        return describe_error(err, conn_id)
    raise AssertionError("no error")


def test_unknown_connection() -> None:
    message = describe_error(_not_found(), "nope")
    assert message.startswith("There is no connection 'nope'. Create a connection of type localleads")


def _not_found() -> Exception:
    try:
        CreditsData(clock=Clock()).credits("localleads_missing_for_sure")
    except Exception as err:
        return err
    raise AssertionError("the connection exists")


def test_wrong_key(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk_wrong_0123456789"
    message = message_for(monkeypatch, sandbox.connection_json().replace(sandbox.api_key, wrong))
    page = render_page(conn_id=CONN, connections=[CONN], error=message)

    assert "401" in message
    assert "API key" in message
    assert wrong not in page
    assert sandbox.api_key not in page
    assert "Traceback" not in page


def test_api_down(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = sandbox.connection_json(extra={"max_retries": 0})
    sandbox.stop()
    message = message_for(monkeypatch, conn)

    assert "could not be reached" in message.lower() or "connect" in message.lower()
    assert sandbox.api_key not in message


def test_rate_limited(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox.rate_limit_next(retry_after="1", times=None)
    message = message_for(monkeypatch, sandbox.connection_json(extra={"max_retries": 0}))
    page = render_page(conn_id=CONN, connections=[CONN], error=message)

    assert message.startswith("The LocalLeads API is rate limiting these requests; reload the page in a minute.")
    assert "429" in message
    assert 'class="error" role="alert"' in page


def test_an_unexpected_error_is_named_by_type_only() -> None:
    message = describe_error(RuntimeError("secret-looking detail"), CONN)
    assert message == (
        "The credits of 'localleads_default' could not be read (RuntimeError). The Airflow api-server's log has "
        "the details."
    )


def test_an_overdrawn_account_renders_without_a_forecast(sandbox: SandboxServer, add: AddTxn) -> None:
    sandbox.set_balance(used=200)  # 100 + 25 - 200 = -75
    add(amount=-50, days_ago=1)
    data = load()
    page = render_page(conn_id=CONN, connections=[CONN], data=data)

    assert data["balance"]["available_credits"] == -75
    assert "No credits are left (-75 available) until the reset on 2026-10-01." in page
    assert '<line class="forecast"' not in page
    assert len(svgs(page)) == 3
