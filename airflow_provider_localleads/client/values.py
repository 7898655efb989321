"""One helper per rule for plain values, so that the connection, the tasks, the models and the error
messages cannot drift apart (e.g. one accepting ``" 30 "`` where another refuses it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_WHITESPACE = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]{0,200}>")


def ascii_digits(text: str) -> str | None:
    """``text`` without the spaces around it if only ASCII digits remain, else None (``"²"`` is a
    digit to ``str.isdigit`` but no number)."""
    text = text.strip()
    return text if text.isascii() and text.isdigit() else None


def whole_number(value: object) -> int | None:
    """``value`` as an int if it is one (not a bool: ``True`` is no count) or a string of ASCII digits
    (spaces around allowed, as templates and forms render them); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    digits = ascii_digits(value) if isinstance(value, str) else None
    return None if digits is None else int(digits)


def seconds(value: float | timedelta) -> float:
    """A duration given as seconds or a ``timedelta`` (Airflow accepts both), in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def python_whole_number(value: object) -> int | None:
    """:func:`whole_number` for an argument given in Python, not rendered from a template: there a
    string (``"5"``) is a mistake, not a number."""
    return None if isinstance(value, str) else whole_number(value)


def iso_z(value: datetime) -> str:
    """An aware datetime as ISO 8601 in UTC with a ``Z`` suffix, as the API writes them."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def excerpt(text: str, redact: Callable[[str], str] | None = None, limit: int = 200) -> str:
    """A single line, HTML tags dropped; ``redact`` sees the whole text before it is cut: a key cut in
    half would no longer match."""
    text = _WHITESPACE.sub(" ", _TAGS.sub(" ", text)).strip()
    return shorten(text if redact is None else redact(text), limit)
