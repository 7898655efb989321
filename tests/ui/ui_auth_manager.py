"""Airflow's SimpleAuthManager with one rule narrowed, to test a decision per connection.

SimpleAuthManager grants connections by role (all or none); this one also refuses connections whose
id starts with ``restricted_`` to everyone but ``admin``, through the public method an auth manager
implements (``is_authorized_connection``), as a real auth manager with per-connection rules would.
Configured as ``[core] auth_manager = ui_auth_manager.PerConnectionAuthManager`` (tests/ui on sys.path).
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class PerConnectionAuthManager(SimpleAuthManager):
    def is_authorized_connection(self, *, method: Any, user: Any, details: Any = None) -> bool:
        conn_id = getattr(details, "conn_id", None) or ""
        if conn_id.startswith("restricted_") and user.get_name() != "admin":
            return False
        return bool(super().is_authorized_connection(method=method, user=user, details=details))
