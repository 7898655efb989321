"""Reading what tasks and triggers logged during a test, on both Airflow lines (shared by two suites)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator

import pytest


@contextlib.contextmanager
def captured_task_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Yields ``read()``: everything the run's tasks and triggers logged so far.

    3.x task and trigger logs are structlog lines on stdout (read through ``capfd``); 2.11 logs through
    stdlib logging, to ``airflow.task`` (which does not propagate) and, for triggers, the root logger,
    whose handlers were bound to streams before the test began, so a handler is attached to both.
    """
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger("airflow.task"), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(handler)
    collected: list[str] = []

    def read() -> str:
        captured = capfd.readouterr()
        collected.append(captured.out + captured.err)
        return "".join(collected) + stream.getvalue()

    try:
        yield read
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
