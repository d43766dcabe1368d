"""The chaos suite's workload: which record is the n-th (pure) and a steady producer (a thread).

Even records go to the ordered route (300 keys), odd ones to the unordered route. By its
number, a record fails transiently once (1 in 10) or twice (1 in 20), or for good (1 in 25:
``PermanentError``, dead-lettered). Every record carries its id in the ``id`` header, which
its dead letter keeps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import KafkaError

from bridge.backends.kafka.send import close_producer

UNORDERED_TOPIC = "chaos-unordered"
ORDERED_TOPIC = "chaos-ordered"
ORDERED_KEYS = 300

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Planned:
    """The n-th record: where it goes and how its handler behaves."""

    topic: str
    key: bytes
    headers: list[tuple[str, bytes]]


def nth(n: int) -> Planned:
    """The n-th record of the workload (deterministic)."""
    headers = [("id", f"r{n}".encode())]
    m = n // 2  # the record's number in its route: both routes get every behaviour
    if m % 25 == 7:
        headers.append(("mode", b"permanent"))
    elif m % 20 == 9:
        headers.append(("fail", b"2"))
    elif m % 10 == 3:
        headers.append(("fail", b"1"))
    if n % 2 == 0:
        key = f"k-{(m * 7919) % ORDERED_KEYS}"
        return Planned(ORDERED_TOPIC, key.encode(), headers)
    return Planned(UNORDERED_TOPIC, f"u-{n % 64}".encode(), headers)


class Producer(threading.Thread):
    """Produces :func:`nth` records at ``rate_per_s`` until :meth:`stop`.

    ``acked`` holds the id of every record Kafka acknowledged; a send that fails (the broker
    is down or frozen) is counted in ``failed`` and not repeated: whether it reached Kafka is
    read back from the topic at the end. kafka-python's producer has been seen to stop
    delivering after a broker restart, for good: neither acknowledging nor failing its sends,
    or failing each at once (no metadata within ``max_block_ms``). After ``STALL_S`` without
    an acknowledgement it is replaced by a new one (counted in ``restarts``). While no new
    producer can bootstrap (the broker is down), each record is a failed send.
    """

    STALL_S = 45.0

    def __init__(self, bootstrap: str, rate_per_s: float) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.bootstrap = bootstrap
        self.rate_per_s = rate_per_s
        self.acked: set[str] = set()
        self.failed = 0
        self.sent = 0
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        producer = self._new()
        next_at = progress_at = time.monotonic()
        acked = 0
        while not self._stopping.is_set():
            producer = producer or self._new()
            if producer is None:
                self._failed(None)  # Kafka cannot be reached: this record is not sent
            else:
                self._send(producer, nth(self.sent))
            self.sent += 1
            if len(self.acked) > acked:
                acked, progress_at = len(self.acked), time.monotonic()
            elif producer is not None and time.monotonic() - progress_at > self.STALL_S:
                producer, progress_at = self._replace(producer), time.monotonic()
            next_at = max(next_at + 1 / self.rate_per_s, time.monotonic() - 1)
            self._stopping.wait(max(0.0, next_at - time.monotonic()))  # the production rate
        if producer is not None:
            with contextlib.suppress(KafkaError):  # what is not flushed is read back from Kafka
                producer.flush(timeout=60)
            close_producer(producer, timeout_s=10)

    def _new(self) -> KafkaProducer | None:
        """A new producer; ``None`` while it cannot bootstrap (the broker is down or frozen:
        the next record tries again)."""
        try:
            return KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                linger_ms=5,
                max_block_ms=2000,
                request_timeout_ms=5000,
                delivery_timeout_ms=30000,
                bootstrap_timeout_ms=2000,
            )
        except KafkaError as exc:
            log.warning("no producer yet (%r): records are not sent until Kafka answers", exc)
            return None

    def _replace(self, producer: KafkaProducer) -> KafkaProducer | None:
        log.warning("no send acknowledged for %.0f s (%d sent, %d acked, %d failed): "
                    "replacing the producer",
                    self.STALL_S, self.sent, len(self.acked), self.failed)  # fmt: skip
        self.restarts += 1
        close_producer(producer, timeout_s=0)
        return self._new()

    def _send(self, producer: KafkaProducer, record: Planned) -> None:
        record_id = dict(record.headers)["id"].decode()
        try:
            future = producer.send(
                record.topic, key=record.key, value=b"{}", headers=record.headers
            )
        except KafkaError:
            self._failed(None)
            return
        future.add_callback(lambda _: self._acked(record_id))
        future.add_errback(self._failed)

    def _acked(self, record_id: str) -> None:
        with self._lock:
            self.acked.add(record_id)

    def _failed(self, _: object) -> None:
        with self._lock:
            self.failed += 1

    def stop(self) -> None:
        """Stop producing, wait for the records in flight (up to a minute)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=90)
