"""Log lines that say which record they are about, in text or JSON, and that do not flood.

The library never configures logging: the CLI does (``--log-format text|json``), and a
Celery worker can call :func:`use_format` from an ``after_setup_logger`` handler (the
project's ``tasks`` app does so when ``BRIDGE_LOG_FORMAT=json``).

Every log line about a record passes :func:`at` as ``extra``, so a JSON line carries
``topic``, ``partition``, ``offset`` and ``task_id`` as fields of their own::

    log.error("%r dead-lettered", record, extra=at(record, task_id=task_id))
    {"time": "...", "level": "ERROR", "logger": "bridge.worker.task", "message": "...",
     "topic": "orders", "partition": 3, "offset": 1207, "task_id": "shop:orders:3:1207"}
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pythonjsonlogger.json import JsonFormatter

from bridge.errors import ConfigError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
FORMAT_ENV = "BRIDGE_LOG_FORMAT"
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Located(Protocol):
    """Anything that says where a record is: a record, a task message, a refusal."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def at(
    record: Located | None = None,
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


@dataclass(slots=True)
class _Seen:
    shown_at: float
    window_s: float
    held: int = 0


class RepeatGate:
    """Which repeats of a line to show (pure): the first at once; repeats within a window are
    held back; the first repeat after the window is shown with how many were held, and the
    window doubles (``first_window_s`` up to ``max_window_s``) while the repeats go on. A line
    quiet for a whole window starts over.

    :param first_window_s: the first window after a line is shown (seconds).
    :param max_window_s: the longest window (seconds).
    """

    def __init__(self, first_window_s: float = 1.0, max_window_s: float = 300.0) -> None:
        self._first_s = first_window_s
        self._max_s = max_window_s
        self._seen: dict[Hashable, _Seen] = {}

    def admit(self, key: Hashable, now_s: float) -> int | None:
        """``None``: hold this line back; else show it, with the number held back before it."""
        seen = self._seen.get(key)
        if seen is None or now_s >= seen.shown_at + 2 * seen.window_s:
            self._forget_old(now_s)
            self._seen[key] = _Seen(now_s, self._first_s)
            return 0
        if now_s < seen.shown_at + seen.window_s:
            seen.held += 1
            return None
        held, seen.held = seen.held, 0
        seen.shown_at, seen.window_s = now_s, min(2 * seen.window_s, self._max_s)
        return held

    def _forget_old(self, now_s: float) -> None:
        if len(self._seen) >= _REMEMBERED_LINES:
            self._seen = {
                k: v for k, v in self._seen.items() if now_s < v.shown_at + 2 * v.window_s
            }


_REMEMBERED_LINES = 1000


class RepeatFilter(logging.Filter):
    """A handler filter that stops a line repeated over and over (an outage seen by a loop, a
    missing topic kafka-python reports ten times a second) from flooding the log: warnings and
    errors go through a :class:`RepeatGate` keyed by logger, level and message."""

    def __init__(
        self, gate: RepeatGate | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._gate = gate or RepeatGate()
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        held = self._gate.admit(key, self._clock())
        if held is None:
            return False
        if held:
            record.msg, record.args = f"{record.getMessage()} (and {held} more like it)", None
        return True


def hold_repeats(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RepeatFilter` on every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
