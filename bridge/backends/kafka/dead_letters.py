"""The dead-letter office: how every process writes its dead letters (Kafka and Redis I/O).

The whole policy lives here, as arroyo keeps its in ``dlq.py``: write the dead letter to its
DLT and wait for Kafka (:class:`DeadLetterProducer`); if Kafka refuses it for good (too large,
not authorized…), *park* it in Redis (``status`` shows it, ``replay --parked`` writes it),
rather than stall its partition retrying it. What happens when the write fails (retryable
errors outlasted the producer's retries: Kafka is down) depends on who sends, on purpose:

=============================  ==============================================================
:meth:`~DeadLetterOffice.send`  raise: the sender still has the record and tries again later
                                (the bridge loop rewinds and pauses, the record is fetched
                                again; ``release --skip`` leaves the key parked)
:meth:`~.send_or_defer`         *defer*: kept in Redis, pending, for the bridge's dead-letter
                                writer, due in :data:`DEFER_MS` (a worker: its task is done)
:meth:`~.defer`                 defer without trying Kafka (a worker's consumer: unroutable
                                records, in the caller's Redis transaction)
:meth:`~.resend`                a pending one, by the bridge's writer: deferred again after a
                                delay that doubles with each failed write (:func:`resend_delay_ms`)
=============================  ==============================================================

Each returns a :class:`Posted`, whose :class:`Fate` (written, deferred or parked) the sender
acts on: logs, metrics, and the transitions of an ordered record's key. The office logs
nothing: its senders' log lines stay theirs.

Thread-safe: the producer is (one per process, its Kafka client created on first write under
a lock), and so is a Redis client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import redis
from kafka.errors import KafkaError

from bridge.backends.kafka.send import Outgoing, RetryingSender
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backoff import exponential_ms
from bridge.deadletter import DeadLetter, dead_letter_headers, from_dict, to_dict
from bridge.errors import DeadLetterError, DeadLetterRefusedError
from bridge.settings import DeadLetterSettings, KafkaSettings

DEFER_MS = 1000
"""How soon the bridge's writer tries a dead letter a worker could not write (ms)."""
RESEND_INITIAL_MS = 1000
RESEND_MAX_MS = 60_000
"""The writer's delays after failed writes of a pending dead letter: 1 s doubling up to 60 s."""


class DeadLetterProducer:
    """An idempotent ``acks=all`` producer that writes dead letters and waits for each write.

    Thread-safe; creating one does no I/O (its Kafka client is created on the first write).
    """

    def __init__(self, kafka: KafkaSettings, policy: DeadLetterSettings) -> None:
        self._sender = RetryingSender(kafka, policy, client_suffix="dlt")

    def write(self, dl: DeadLetter) -> tuple[int, int]:
        """Write one dead letter and wait until Kafka has it.

        Retryable Kafka errors are retried ``policy.retries`` times with exponential backoff.

        :returns: the DLT partition and offset written.
        :raises DeadLetterRefusedError: Kafka refused it for good (non-retryable error).
        :raises DeadLetterError: retryable errors outlasted the retries.
        """
        rec = dl.record
        out = Outgoing(dl.dlt_topic, rec.raw_value, rec.key, dead_letter_headers(dl))
        try:
            return self._sender.send(out, what=f"dead letter for {rec!r}")
        except KafkaError as exc:
            message = f"dead letter for {rec!r} not written to {dl.dlt_topic}: {exc!r}"
            if self._sender.is_final(exc):
                raise DeadLetterRefusedError(message) from exc
            raise DeadLetterError(message) from exc

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the producer."""
        self._sender.close(timeout_s)


class Writer(Protocol):
    """What the office writes with (:class:`DeadLetterProducer`)."""

    def write(self, dl: DeadLetter) -> tuple[int, int]:
        """See :meth:`DeadLetterProducer.write`."""
        ...


class Fate(StrEnum):
    """Where a dead letter is now."""

    WRITTEN = "written"  # in its DLT
    DEFERRED = "deferred"  # pending in Redis: the bridge's writer writes it
    PARKED = "parked"  # in Redis for good: Kafka refuses it (``replay --parked``)


@dataclass(frozen=True, slots=True)
class Posted:
    """What became of one dead letter.

    :param dlt_partition: written: where in its DLT (with ``dlt_offset``).
    :param error: parked: Kafka's refusal; deferred after a write: why it failed.
    :param write_attempts: deferred by :meth:`DeadLetterOffice.resend`: failed writes so far.
    :param retry_in_ms: deferred: when the writer tries it (ms from now).
    """

    letter: DeadLetter
    fate: Fate
    dlt_partition: int | None = None
    dlt_offset: int | None = None
    error: DeadLetterError | None = None
    write_attempts: int = 0
    retry_in_ms: int = 0


def resend_delay_ms(write_attempts: int) -> int:
    """The writer's delay before the next write of a pending dead letter that failed
    ``write_attempts`` times (ms)."""
    return exponential_ms(write_attempts, initial_ms=RESEND_INITIAL_MS, max_ms=RESEND_MAX_MS)


class DeadLetterOffice:
    """Writes dead letters, and keeps in Redis those Kafka does not take (see the module).

    :param producer: ``None`` in a process that only defers (:meth:`defer`).
    :param clock: the time in seconds since the epoch (tests pass their own).
    """

    def __init__(
        self,
        producer: Writer | None,
        store: DeadLetterStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._producer = producer
        self._store = store
        self._clock = clock

    def send(self, dl: DeadLetter) -> Posted:
        """Write ``dl``; park it if Kafka refuses it for good.

        :returns: written or parked.
        :raises DeadLetterError: not written (Kafka unreachable): the caller still has it.
        :raises redis.RedisError: refused, and not parked either.
        """
        try:
            return self._write(dl)
        except DeadLetterRefusedError as err:
            return self._park(dl, to_dict(dl), err)

    def send_or_defer(self, dl: DeadLetter) -> Posted:
        """Write ``dl``; park it if Kafka refuses it for good; if the write fails, defer it
        (the bridge's writer tries it in :data:`DEFER_MS`).

        :raises redis.RedisError: neither written nor kept in Redis.
        """
        try:
            return self.send(dl)
        except DeadLetterError as err:  # a refusal is parked by send()
            self._store.defer(to_dict(dl), self._now_ms() + DEFER_MS)
            return Posted(dl, Fate.DEFERRED, error=err, retry_in_ms=DEFER_MS)

    def defer(self, dl: DeadLetter, pipe: redis.client.Pipeline | None = None) -> Posted:
        """Keep ``dl`` for the bridge's writer, due now, without trying Kafka; with ``pipe``,
        as one more command of that transaction (the caller executes it)."""
        self._store.defer(to_dict(dl), self._now_ms(), pipe)
        return Posted(dl, Fate.DEFERRED)

    def resend(self, pending: dict[str, Any]) -> Posted:
        """Write a pending dead letter (as :meth:`DeadLetterStore.due` gives it) and forget it;
        park it if Kafka refuses it for good; if the write fails, it is due again after
        :func:`resend_delay_ms`.

        :raises redis.RedisError: Redis failed; the letter may still be pending.
        """
        dl = from_dict(pending)
        try:
            posted = self._write(dl)
        except DeadLetterRefusedError as err:
            return self._park(dl, pending, err)
        except DeadLetterError as err:
            attempts = int(pending.get("write_attempts", 0)) + 1
            delay_ms = resend_delay_ms(attempts)
            updated = {**pending, "write_attempts": attempts}
            self._store.retry_later(pending, updated, self._now_ms() + delay_ms)
            return Posted(dl, Fate.DEFERRED, error=err, write_attempts=attempts,
                          retry_in_ms=delay_ms)  # fmt: skip
        self._store.written(pending)
        return posted

    def _write(self, dl: DeadLetter) -> Posted:
        if self._producer is None:
            raise RuntimeError("this dead-letter office only defers: it has no producer")
        partition, offset = self._producer.write(dl)
        return Posted(dl, Fate.WRITTEN, dlt_partition=partition, dlt_offset=offset)

    def _park(self, dl: DeadLetter, data: dict[str, Any], err: DeadLetterRefusedError) -> Posted:
        self._store.park(data)
        return Posted(dl, Fate.PARKED, error=err)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
