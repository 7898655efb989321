"""Airflow 2.11 has no AssetWatcher: the watcher module imports, and building a watcher says why not."""

from __future__ import annotations

import importlib

import pytest

from airflow_provider_localleads._compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

pytestmark = pytest.mark.skipif(AIRFLOW_V_3_0_PLUS, reason="Airflow 2 only")


def test_the_module_imports_and_constructing_a_watcher_needs_airflow_3():
    events = importlib.import_module("airflow_provider_localleads.triggers.events")

    for build in (lambda: events.CreditsResetTrigger(), lambda: events.CreditsThresholdTrigger(100, "below")):
        with pytest.raises(
            LocalLeadsConfigurationError,
            match=r"needs Airflow 3 \(event-driven scheduling with AssetWatcher\); this is Airflow 2\.",
        ):
            build()
