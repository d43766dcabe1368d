"""Pages of a dead-letter topic, read by Kafka offsets (Kafka I/O): never the whole topic.

A page is read backwards from an offset (newest first): chunks of :data:`CHUNK` records
before it, filtered, until the page is full, or :data:`SCAN_BUDGET` records were looked at, or
:data:`SCAN_TIME_S` went by (a filter that matches little must not hold the page up); the next
(older) page starts where the scan stopped. One consumer without a group serves every
request, one at a time (kafka-python's consumer is not thread-safe).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bridge.backends.kafka.auth import security_configs
from bridge.console.views import Letter, LetterFilter
from bridge.settings import BridgeSettings

CHUNK = 500  # records read per seek
SCAN_BUDGET = 20_000  # records looked at for one page at most (a filter that matches little)
SCAN_TIME_S = 0.4  # ...and for this long at most: a page renders well within a second
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Partition:
    """A DLT partition's offsets: ``low`` (first kept) and ``high`` (end: the next to write)."""

    partition: int
    low: int
    high: int

    @property
    def records(self) -> int:
        """How many records it holds."""
        return self.high - self.low


@dataclass(slots=True)
class Page:
    """Dead letters of one partition, newest first, and where the scan stopped.

    :param scanned_from: the lowest offset looked at; the older page starts below it.
    """

    partition: Partition
    before: int
    letters: list[Letter] = field(default_factory=list)
    scanned_from: int = 0
    scanned: int = 0

    @property
    def older(self) -> int | None:
        """The ``before`` offset of the next, older page (``None``: this is the oldest)."""
        return self.scanned_from if self.scanned_from > self.partition.low else None


class DltReader:
    """Reads DLT partitions by offsets for the console."""

    def __init__(self, settings: BridgeSettings) -> None:
        k = settings.kafka
        self._consumer = KafkaConsumer(
            bootstrap_servers=k.bootstrap_servers.split(","),
            client_id=f"{k.client_id}-console",
            enable_auto_commit=False,
            request_timeout_ms=k.request_timeout_ms,
            max_poll_records=CHUNK,
            **security_configs(k),
        )
        self._lock = threading.Lock()

    def partitions(self, dlt: str) -> list[Partition]:
        """Every partition of ``dlt`` with its offsets (empty: the topic does not exist)."""
        with self._lock:
            ids = sorted(self._consumer.partitions_for_topic(dlt) or ())
            tps = [TopicPartition(dlt, p) for p in ids]
            if not tps:
                return []
            lows = self._consumer.beginning_offsets(tps)
            highs = self._consumer.end_offsets(tps)
        return [Partition(tp.partition, int(lows[tp]), int(highs[tp])) for tp in tps]

    def page(
        self, dlt: str, part: Partition, before: int | None, flt: LetterFilter, size: int
    ) -> Page:
        """Up to ``size`` dead letters of ``part`` below offset ``before`` (default: its end)
        that pass ``flt``, newest first."""
        top = part.high if before is None else max(part.low, min(before, part.high))
        page = Page(part, top, scanned_from=top)
        with self._lock:
            deadline = time.monotonic() + SCAN_TIME_S
            while len(page.letters) < size and page.scanned < SCAN_BUDGET:
                if page.scanned and time.monotonic() > deadline:
                    break
                start = max(part.low, page.scanned_from - CHUNK)
                if start >= page.scanned_from:
                    break
                chunk = self._read(TopicPartition(dlt, part.partition), start, page.scanned_from)
                page.scanned += len(chunk)
                page.scanned_from = start
                page.letters += [x for x in reversed(chunk) if flt.matches(x)]
        del page.letters[size:]
        if len(page.letters) == size:  # full: the older page goes on below the last shown
            page.scanned_from = page.letters[-1].offset
        return page

    def one(self, dlt: str, partition: int, offset: int) -> Letter | None:
        """The record at ``offset`` of ``dlt``'s ``partition``, or ``None``."""
        with self._lock:
            found = self._read(TopicPartition(dlt, partition), offset, offset + 1)
        return found[0] if found and found[0].offset == offset else None

    def close(self) -> None:
        """Close the consumer."""
        with self._lock:
            self._consumer.close()

    def _read(self, tp: TopicPartition, start: int, stop: int) -> list[Letter]:
        """The records of ``tp`` from ``start`` up to ``stop`` (exclusive), oldest first."""
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        found: list[Letter] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while self._consumer.position(tp) < stop and time.monotonic() < deadline:
            for records in self._consumer.poll(timeout_ms=200).values():
                found += [_letter(r) for r in records if start <= r.offset < stop]
        return found


def _letter(record: Any) -> Letter:
    headers = tuple((name, value) for name, value in record.headers or ())
    return Letter(
        record.partition, record.offset, int(record.timestamp), record.key, record.value, headers
    )
