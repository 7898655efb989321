"""The control for the blocked-loop figures: as many of Airflow's own deferrable time sensors.

The triggerer logs "Triggerer's async thread was blocked for N seconds" when something holds its
event loop over 0.2 s. Both counts are printed at the end of the session (never asserted: a shared
2-core machine blocks loops for its own reasons); this only checks the control really ran.
"""

from __future__ import annotations

import pytest
from deployment_scenarios import SENSORS, ControlScenario

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1800)]


def test_the_control_sensors_all_fired(control_scenario: ControlScenario) -> None:
    assert len(control_scenario.final) == SENSORS
    assert {ti.state for ti in control_scenario.final.values()} == {"success"}
