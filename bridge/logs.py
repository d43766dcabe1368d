"""Log lines that say which record they are about, in text or JSON.

The library never configures logging: the CLI does (``--log-format text|json``), and a
Celery worker can call :func:`use_format` from an ``after_setup_logger`` handler (the
project's ``tasks`` app does so when ``BRIDGE_LOG_FORMAT=json``).

Every log line about a record passes :func:`at` as ``extra``, so a JSON line carries
``topic``, ``partition``, ``offset`` and ``task_id`` as fields of their own::

    log.error("%r dead-lettered", record, extra=at(record, task_id=task_id))
    {"time": "...", "level": "ERROR", "logger": "bridge.task", "message": "...",
     "topic": "orders", "partition": 3, "offset": 1207, "task_id": "shop:orders:3:1207"}
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal, Protocol

from pythonjsonlogger.json import JsonFormatter

from bridge.errors import ConfigError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
FORMAT_ENV = "BRIDGE_LOG_FORMAT"
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Located(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def at(
    record: _Located | None = None,
    *,
    task_id: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """The ``extra`` of a log line about a record (or a partition, or a task)."""
    if record is not None:
        topic, partition, offset = record.topic, record.partition, record.offset
    fields = {"topic": topic, "partition": partition, "offset": offset, "task_id": task_id}
    return {name: value for name, value in fields.items() if value is not None}


def formatter(log_format: LogFormat) -> logging.Formatter:
    """A formatter for ``text`` (one readable line) or ``json`` (one JSON object per line,
    record fields included)."""
    if log_format == "json":
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
        )
    return logging.Formatter(TEXT)


def format_from_env(default: LogFormat = "text") -> LogFormat:
    """``BRIDGE_LOG_FORMAT``, or ``default`` when it is not set.

    :raises ConfigError: it names no format.
    """
    value = os.environ.get(FORMAT_ENV, default)
    for known in LOG_FORMATS:
        if value == known:
            return known
    raise ConfigError(f"{FORMAT_ENV}: {value!r} is not one of {', '.join(LOG_FORMATS)}")


def use_format(log_format: LogFormat, logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (default: the root logger) the chosen format."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(formatter(log_format))
