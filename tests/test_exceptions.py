"""Unit tests for the error hierarchy (``exceptions.py``): every documented error, pickling."""

from __future__ import annotations

import inspect
import pickle

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_localleads import exceptions
from airflow_provider_localleads.exceptions import LocalLeadsError

PATH = "/api/v1/credits/balance"

ERROR_CLASSES = sorted(
    (
        cls
        for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, LocalLeadsError) and cls.__module__ == exceptions.__name__
    ),
    key=lambda cls: cls.__name__,
)


def test_the_hierarchy_has_every_documented_error() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {
        "LocalLeadsError",
        "LocalLeadsAuthenticationError",
        "LocalLeadsRateLimitError",
        "LocalLeadsServerError",
        "LocalLeadsConnectionError",
        "LocalLeadsResponseError",
    } <= names
    assert all(issubclass(cls, AirflowException) for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_survives_pickling_with_its_message_and_attributes(cls: type[LocalLeadsError]) -> None:
    err = cls("Something happened", path=PATH, status_code=503, request_id="req-1", retry_after=2.5)

    clone = pickle.loads(pickle.dumps(err))

    assert type(clone) is cls
    assert str(clone) == str(err)
    assert str(clone) == f"Something happened [HTTP 503, GET {PATH}, request id req-1]"
    assert clone.args == err.args
    assert clone.path == PATH
    assert clone.http_status == 503
    assert clone.request_id == "req-1"
    assert clone.retry_after == 2.5
    assert clone.transient is err.transient
    assert clone.error_type == cls.__name__
    # A second round trip does not append the context twice.
    assert str(pickle.loads(pickle.dumps(clone))) == str(err)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_without_context_survives_pickling(cls: type[LocalLeadsError]) -> None:
    err = cls("plain")
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == "plain"
    assert (clone.path, clone.http_status, clone.request_id, clone.retry_after) == (None, None, None, None)
