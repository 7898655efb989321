"""What the page says when the credits cannot be shown: one sentence naming the fix, never a traceback.

The provider's own errors already say what happened and what to do, with the HTTP status and the
request path and never the API key; they are shown as they are. A missing connection gets its own
sentence. Anything else is named by its type only (its text could hold anything) and logged.
"""

from __future__ import annotations

import logging

from airflow.providers.common.compat.sdk import AirflowNotFoundException

from airflow_provider_localleads.exceptions import (
    LocalLeadsConfigurationError,
    LocalLeadsError,
    LocalLeadsRateLimitError,
)

__all__ = ["describe_error", "error_status"]

log = logging.getLogger(__name__)


def describe_error(err: Exception, conn_id: str) -> str:
    """The message the page shows instead of the credits of ``conn_id``."""
    if isinstance(err, AirflowNotFoundException):
        return (
            f"There is no connection {conn_id!r}. Create a connection of type localleads with that id "
            "(Admin > Connections), or pick another one."
        )
    if isinstance(err, LocalLeadsRateLimitError):
        return f"The LocalLeads API is rate limiting these requests; reload the page in a minute. {err}"
    if isinstance(err, LocalLeadsError):
        return str(err)
    log.warning("LocalLeads credits page: reading %r failed with %s", conn_id, type(err).__name__)
    return (
        f"The credits of {conn_id!r} could not be read ({type(err).__name__}). "
        "The Airflow api-server's log has the details."
    )


def error_status(err: Exception) -> int:
    """The JSON route's HTTP status for an error reading the credits."""
    if isinstance(err, AirflowNotFoundException):
        return 404
    if isinstance(err, LocalLeadsRateLimitError):
        return 429
    if isinstance(err, LocalLeadsConfigurationError):
        return 409  # the stored connection is unusable: the fix is in Airflow, not in this request
    if isinstance(err, LocalLeadsError):
        return 502  # the LocalLeads API refused or failed
    return 500
