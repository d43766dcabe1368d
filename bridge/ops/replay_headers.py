"""A dead letter read through its headers, and the headers of its replay (pure).

A dead letter is looked at through its headers (:class:`DeadView`), whether it is a DLT record
or a dead letter parked in Redis. Dead-lettering appends its headers after the record's
original ones, starting with ``kafka_dlt-original-topic`` (see
:func:`bridge.deadletter.dead_letter_headers`), so the original headers are everything before
the last such header, byte for byte; :class:`Origin` is the original record's place.

The loop guard: a replayed record carries ``bridge-replays`` (UTF-8 integer), one more than
the count in its original headers (0 when absent): :func:`replay_count`,
:func:`replayed_headers`. What to do with a dead letter is :mod:`bridge.ops.replay_plan`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.record import Headers, TimestampType

REPLAYS_HEADER = "bridge-replays"
FIRST_ADDED_HEADER = "kafka_dlt-original-topic"


@dataclass(frozen=True, slots=True)
class DeadView:
    """One dead letter as replay sees it: its headers, key and (DLT record) timestamp.

    :param timestamp_ms: the DLT record's Kafka timestamp (ms since the epoch); the time
        filter falls back to it when ``bridge-dead-lettered-at`` is missing.
    """

    headers: Headers
    key: bytes | None
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or ``None``."""
        found = [value for key, value in self.headers if key == name]
        return found[-1] if found else None

    def text(self, name: str) -> str | None:
        """Header ``name`` as UTF-8 text (``None`` when absent or not UTF-8)."""
        value = self.header(name)
        try:
            return None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def split(self) -> tuple[Headers, Headers] | None:
        """``(original headers, dead-letter headers)``; ``None``: not a dead letter."""
        names = [name for name, _ in self.headers]
        if FIRST_ADDED_HEADER not in names:
            return None
        cut = len(names) - 1 - names[::-1].index(FIRST_ADDED_HEADER)
        return self.headers[:cut], self.headers[cut:]

    def dead_lettered_at(self) -> datetime | None:
        """When the record was dead-lettered: ``bridge-dead-lettered-at``, else the DLT
        record's timestamp (``None`` when neither is known)."""
        stamp = self.text("bridge-dead-lettered-at")
        if stamp is not None:
            try:
                when = datetime.fromisoformat(stamp)
                return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
            except ValueError:
                pass
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC) if self.timestamp_ms else None

    def origin(self) -> Origin | None:
        """Where the record came from (``kafka_dlt-original-*``); ``None`` when unknown."""
        topic = self.text(FIRST_ADDED_HEADER)
        partition, offset = (
            self.header("kafka_dlt-original-partition"),
            self.header("kafka_dlt-original-offset"),
        )
        if not topic or partition is None or offset is None:
            return None
        try:
            stamp = self.header("kafka_dlt-original-timestamp") or b"\0" * 8
            return Origin(
                topic=topic,
                partition=struct.unpack(">i", partition)[0],
                offset=struct.unpack(">q", offset)[0],
                timestamp_ms=struct.unpack(">q", stamp)[0],
                group_id=self.text("kafka_dlt-original-consumer-group") or "",
                timestamp_type=_timestamp_type(self.text("kafka_dlt-original-timestamp-type")),
            )
        except struct.error:
            return None


@dataclass(frozen=True, slots=True)
class Origin:
    """The original record's place, from the ``kafka_dlt-original-*`` headers."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    group_id: str
    timestamp_type: TimestampType = TimestampType.CREATE_TIME


def _timestamp_type(name: str | None) -> TimestampType:
    """The type named ``name`` (``CreateTime`` when absent or unknown: dead letters written
    before the bridge wrote the header, nearly all of them from topics of that default type)."""
    try:
        return TimestampType(name or TimestampType.CREATE_TIME)
    except ValueError:
        return TimestampType.CREATE_TIME


def replay_count(original: Headers) -> int:
    """How often the record was replayed already: its last ``bridge-replays`` (0 if none or
    not an integer)."""
    values = [value for name, value in original if name == REPLAYS_HEADER]
    try:
        return max(0, int((values[-1] or b"").decode("ascii"))) if values else 0
    except (UnicodeDecodeError, ValueError):
        return 0


def replayed_headers(original: Headers, count: int) -> Headers:
    """The original headers, byte-exact and in order, with ``bridge-replays`` set to ``count``
    (an earlier one is dropped, the new one goes last)."""
    kept = tuple((name, value) for name, value in original if name != REPLAYS_HEADER)
    return (*kept, (REPLAYS_HEADER, str(count).encode()))
