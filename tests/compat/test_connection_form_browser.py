"""Airflow 3.x's real "Add Connection" form in headless Chromium (Debian's ``/usr/bin/chromium``).

Starts ``airflow api-server`` (SimpleAuthManager, all users admin: no login page) on a free
loopback port, opens ``/connections``, clicks "Add Connection", picks LocalLeads and checks what a
user sees: Base URL with the production URL as placeholder, the API key as a password input, the
typed extra fields, and no Login/Schema/Port. It then saves the connection with the optional
fields left empty (after typing into them and clearing them again), checks the exact extra the form
posts, and proves the saved connection works with ``airflow connections test`` on the same database.

Screenshots: ``.test-artifacts/connection-form.png`` (standard fields) and
``.test-artifacts/connection-form-extras.png`` (extra fields).

Driven by Playwright for Python (its bundled driver only; browsers are never downloaded: Chromium is
launched from ``/usr/bin/chromium``). Skipped when Chromium or Playwright is missing, unless
``LOCALLEADS_REQUIRE_BROWSER=1`` (CI), which turns that into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compat_support import (
    AIRFLOW_BIN,
    AIRFLOW_V3,
    ARTIFACTS,
    EXTRA_FIELDS,
    FORM_EXTRA_V3,
    FORM_FROM_WIDGETS,
    PRODUCTION_BASE_URL,
    SIMPLE_AUTH_MANAGER,
    AirflowHome,
    free_port,
    run_airflow,
)

from airflow_provider_localleads.sandbox import SandboxServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONN_ID = "localleads_browser"
SERVER_START_TIMEOUT = 180.0
REQUIRE_BROWSER = os.environ.get("LOCALLEADS_REQUIRE_BROWSER") == "1"


def _missing() -> str:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian: apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the 'playwright' Python package (pip install playwright; no 'playwright install')")
    return "browser test needs " + " and ".join(missing) if missing else ""


MISSING = _missing()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not AIRFLOW_V3, reason="drives Airflow 3's React UI (api-server); 2.11 is covered in-process"),
    pytest.mark.skipif(
        FORM_FROM_WIDGETS,
        reason="written for the form 3.2+ build from conn-fields (number inputs with bounds); 3.0 and 3.1 build "
        "it from the hook's wtforms fields, whose hook_meta test_ui_api_v3.py checks",
    ),
    pytest.mark.skipif(bool(MISSING) and not REQUIRE_BROWSER, reason=MISSING),
]


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    if MISSING:  # only reached with LOCALLEADS_REQUIRE_BROWSER=1
        pytest.fail(f"{MISSING}; LOCALLEADS_REQUIRE_BROWSER=1 requires it")


@dataclass(frozen=True)
class ApiServer:
    url: str
    home: AirflowHome
    env: dict[str, str]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@pytest.fixture(scope="module")
def api_server(cli_home: AirflowHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    port = free_port()
    overrides = {
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    env = cli_home.env(**overrides)
    log_path = tmp_path_factory.mktemp("api-server") / "api-server.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(AIRFLOW_BIN), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=cli_home.path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while _get(f"{url}/api/v2/monitor/health") != 200:
            if proc.poll() is not None or time.monotonic() - started > SERVER_START_TIMEOUT:
                tail = log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"airflow api-server did not come up on {url} (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        print(f"api-server answered after {time.monotonic() - started:.1f} s")
        yield ApiServer(url=url, home=cli_home, env=overrides)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def page(api_server: ApiServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            tab = context.new_page()
            tab.set_default_timeout(30_000)
            yield tab
        finally:
            browser.close()


def _visible_names(dialog: Any) -> set[str]:
    names = dialog.locator("input, textarea").evaluate_all(
        "els => els.filter(e => e.offsetParent !== null && e.name).map(e => e.name)"
    )
    return set(names)


def test_add_connection_form(page: Any, api_server: ApiServer, canary_sandbox: SandboxServer) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{api_server.url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    type_select = dialog.get_by_role("combobox")

    def choose(type_name: str) -> None:
        type_select.click()
        type_select.fill(type_name)
        page.get_by_role("option", name=type_name, exact=True).click()

    # A type without field behaviour shows Login/Schema/Port: the selectors below really find them.
    choose("Generic")
    dialog.get_by_label("Login").wait_for()
    assert {"host", "login", "password", "port", "schema"} <= _visible_names(dialog)

    choose("LocalLeads")
    base_url = dialog.get_by_label("Base URL")
    base_url.wait_for()
    api_key = dialog.get_by_label("API key")
    assert base_url.get_attribute("name") == "host"
    assert base_url.get_attribute("placeholder") == PRODUCTION_BASE_URL
    assert api_key.get_attribute("name") == "password"
    assert api_key.get_attribute("type") == "password"
    assert "LOCALLEADS_API_KEY" in (api_key.get_attribute("placeholder") or "")
    visible = _visible_names(dialog)
    assert {"host", "password"} <= visible
    assert not visible & {"login", "schema", "port"}, visible
    for hidden_label in ("Login", "Schema", "Port", "Host", "Password"):
        assert dialog.get_by_label(hidden_label, exact=True).count() == 0, hidden_label
    page.screenshot(path=str(ARTIFACTS / "connection-form.png"))

    base_url.fill(canary_sandbox.url)
    api_key.fill(canary_sandbox.api_key)

    dialog.get_by_text("Extra Fields", exact=True).click()
    base_url.wait_for(state="hidden")  # the accordion shows one section at a time
    timeout = dialog.get_by_label("Timeout (seconds)")
    max_retries = dialog.get_by_label("Max retries")
    insecure = dialog.get_by_label("Allow plain http:// to a non-loopback host")
    timeout.wait_for()
    assert timeout.get_attribute("role") == "spinbutton"  # a number input
    assert max_retries.get_attribute("role") == "spinbutton"
    assert (max_retries.get_attribute("aria-valuemin"), max_retries.get_attribute("aria-valuemax")) == ("0", "10")
    assert insecure.get_attribute("type") == "checkbox"
    assert not insecure.is_checked()
    assert {f"element_{name}" for name in EXTRA_FIELDS} <= _visible_names(dialog)
    assert dialog.get_by_text("Empty: 5 s to connect, 30 s to read.").is_visible()
    assert dialog.get_by_text("Sends the API key unencrypted.", exact=False).is_visible()
    page.screenshot(path=str(ARTIFACTS / "connection-form-extras.png"))

    # Type into the optional fields and clear them again, flip the switch on and off: still "unset".
    switch = page.locator('[id="switch:element_allow_insecure_http:control"]')
    for field, value in ((timeout, "7.5"), (max_retries, "3")):
        field.fill(value)
        field.fill("")
    switch.click()
    assert insecure.is_checked()
    switch.click()
    assert not insecure.is_checked()

    with page.expect_response(
        lambda r: r.url.endswith("/api/v2/connections") and r.request.method == "POST"
    ) as saved_info:
        dialog.get_by_role("button", name="Save").click()
    saved = saved_info.value
    assert saved.status == 201, saved.text()
    posted = json.loads(saved.request.post_data or "{}")
    print("the form posted extra:", posted["extra"])
    assert posted["conn_type"] == "localleads"
    assert posted["host"] == canary_sandbox.url
    assert json.loads(posted["extra"]) == json.loads(FORM_EXTRA_V3), (
        "Airflow's form now saves empty optional fields differently: update FORM_EXTRA_V3 in compat_support.py"
    )
    assert canary_sandbox.api_key not in saved.text()

    dialog.wait_for(state="detached")  # the modal closes (its inputs hold the key until then)
    page.get_by_role("row").filter(has_text=CONN_ID).wait_for()
    assert canary_sandbox.api_key not in page.content()

    # The connection exactly as the form stored it (metadata DB of the api-server) works.
    result = run_airflow(api_server.home, "connections", "test", CONN_ID, **api_server.env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Connection success!" in result.stdout
    assert canary_sandbox.api_key not in output
    assert canary_sandbox.request_count("/api/v1/credits/balance") == 1
