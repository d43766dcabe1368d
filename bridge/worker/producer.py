"""``bridge.produce``: applications (Celery tasks or any process) write records to Kafka.

Each call waits until Kafka has the record (``acks=all``, idempotent producer) and returns
its partition and offset. Retryable Kafka errors (leader moves, not enough replicas, request
timeouts, a broker that is down) are retried ``[produce] retries`` times with exponential
backoff; anything else fails at once with :class:`ProduceRefusedError`. Retries and errors are
counted in the process (:func:`stats`) and as Prometheus counters::

    bridge_produce_records_total           records written
    bridge_produce_retries_total{error}    retries, by the Kafka error that caused them
    bridge_produce_errors_total{error}     records given up on, by the final error

The module-level functions use one producer per process, configured from ``BRIDGE_CONFIG``
(``[kafka]`` and ``[produce]``), created on first use and again in a forked child.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import prometheus_client
from kafka.errors import KafkaError

from bridge import payload
from bridge.backends.kafka.send import Outgoing, RetryingSender
from bridge.errors import ProduceError, ProduceRefusedError
from bridge.payload import HeadersIn, Value
from bridge.settings import KafkaSettings, ProduceSettings
from bridge.worker.state import settings

log = logging.getLogger(__name__)

PER_CALL_OPTIONS = frozenset({"retries", "retry_backoff_ms", "retry_backoff_max_ms"})
SERIALIZATION_ERROR = "SerializationError"  # the error label of values that cannot be encoded


@functools.cache
def _counters() -> tuple[prometheus_client.Counter, ...]:
    """The Prometheus counters (records, retries, errors), created on first use rather than at
    import: in a prefork worker that is in the pool process, after the worker's metrics switched
    prometheus_client to multiprocess mode, so the worker's /metrics serves them
    (:mod:`bridge.worker.metrics`)."""
    return (
        prometheus_client.Counter("bridge_produce_records", "Records bridge.produce wrote."),
        prometheus_client.Counter(
            "bridge_produce_retries", "Retries of bridge.produce, by the Kafka error.", ["error"]
        ),
        prometheus_client.Counter(
            "bridge_produce_errors",
            "Records bridge.produce gave up on, by the final error.",
            ["error"],
        ),
    )


OnSuccess = Callable[["Produced"], object]
OnError = Callable[[BaseException], object]


@dataclass(frozen=True, slots=True)
class Produced:
    """Where a record was written."""

    topic: str
    partition: int
    offset: int

    def to_dict(self) -> dict[str, str | int]:
        """JSON-safe form: ``{"topic", "partition", "offset"}``."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class ProduceStats:
    """Counts since the producer was created: records written, retries and errors by error."""

    records: int
    retries: dict[str, int]
    errors: dict[str, int]


class _Tally:
    """Thread-safe in-process counts, mirrored to the Prometheus counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records = 0
        self._retries: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    def record(self) -> None:
        with self._lock:
            self._records += 1
        _counters()[0].inc()

    def retry(self, error: str) -> None:
        with self._lock:
            self._retries[error] += 1
        _counters()[1].labels(error=error).inc()

    def error(self, error: str) -> None:
        with self._lock:
            self._errors[error] += 1
        _counters()[2].labels(error=error).inc()

    def snapshot(self) -> ProduceStats:
        with self._lock:
            return ProduceStats(self._records, dict(self._retries), dict(self._errors))


class Producer:
    """Writes application records to Kafka with retries. Thread-safe; one per process.

    :param kafka: how to reach Kafka (``bootstrap_servers``, ``client_id`` + ``-produce``).
    :param policy: retries, backoff and the delivery timeout of one attempt.
    """

    def __init__(self, kafka: KafkaSettings, policy: ProduceSettings) -> None:
        self._policy = policy
        self._tally = _Tally()
        self._sender = RetryingSender(
            kafka, policy, client_suffix="produce", check_topics=True, on_retry=self._count_retry
        )
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def produce(
        self,
        topic: str,
        value: Value,
        key: Value = None,
        headers: HeadersIn = None,
        **retry: int,
    ) -> Produced:
        """Write one record and wait until Kafka has it.

        :param value: bytes, str (UTF-8), dict or list (JSON), or None (a tombstone).
        :param key: as ``value``; None for no key.
        :param headers: ``(name, bytes | str)`` pairs or a mapping.
        :param retry: per-call ``retries``, ``retry_backoff_ms``, ``retry_backoff_max_ms``.
        :raises ProduceRefusedError: refused for good, at once (too large, unknown topic, not
            authorized, a value that cannot be encoded).
        :raises ProduceError: retryable errors outlasted the retries.
        :raises TypeError: an unknown per-call option.
        :raises pydantic.ValidationError: a per-call option out of range (named).
        """
        policy = self._policy_with(retry)
        out = self._encode(topic, value, key, headers)
        try:
            partition, offset = self._sender.send(out, policy=policy, what=f"key {out.key!r}")
        except KafkaError as exc:
            self._tally.error(type(exc).__name__)
            message = f"record not written to {topic!r}: {exc!r}"
            if self._sender.is_final(exc):
                raise ProduceRefusedError(message) from exc
            raise ProduceError(message) from exc
        self._tally.record()
        return Produced(topic, partition, offset)

    def produce_async(
        self,
        topic: str,
        value: Value,
        key: Value = None,
        headers: HeadersIn = None,
        *,
        on_success: OnSuccess | None = None,
        on_error: OnError | None = None,
        **retry: int,
    ) -> Future[Produced]:
        """:meth:`produce` without blocking the caller: the same retries run on this producer's
        background thread, one record after another in call order.

        :param on_success: called with the :class:`Produced` (on the background thread).
        :param on_error: called with the :class:`ProduceError` (or other exception).
        :returns: a future of the :class:`Produced`; its exception is what ``on_error`` gets.
        """
        future = self._background().submit(self.produce, topic, value, key, headers, **retry)
        future.add_done_callback(lambda done: _call_back(done, on_success, on_error))
        return future

    def stats(self) -> ProduceStats:
        """Records written, retries and errors (by error class name) of this producer."""
        return self._tally.snapshot()

    def close(self, timeout_s: float = 5.0) -> None:
        """Finish pending async writes, then flush and close the Kafka producer."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._sender.close(timeout_s)

    def _policy_with(self, retry: dict[str, int]) -> ProduceSettings:
        unknown = sorted(set(retry) - PER_CALL_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown per-call option(s) {unknown}; known: {sorted(PER_CALL_OPTIONS)}"
            )
        if not retry:
            return self._policy
        return ProduceSettings(**{**self._policy.model_dump(), **retry})

    def _encode(self, topic: str, value: Value, key: Value, headers: HeadersIn) -> Outgoing:
        try:
            return Outgoing(
                topic,
                payload.to_bytes(value, what="value"),
                payload.to_bytes(key, what="key"),
                payload.header_list(headers),
            )
        except (TypeError, ValueError) as exc:
            raise self.refuse(topic, exc) from exc

    def refuse(self, topic: str, reason: Exception) -> ProduceRefusedError:
        """Count a record for ``topic`` that cannot be encoded (``reason``), and say why."""
        self._tally.error(SERIALIZATION_ERROR)
        return ProduceRefusedError(f"record for {topic!r} refused: {reason}")

    def _count_retry(self, exc: KafkaError, attempt: int, delay_ms: int) -> None:
        self._tally.retry(type(exc).__name__)

    def _background(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="bridge-produce")
            return self._executor


def _call_back(
    done: Future[Produced], on_success: OnSuccess | None, on_error: OnError | None
) -> None:
    try:
        exc = done.exception()
        if exc is None and on_success is not None:
            on_success(done.result())
        elif exc is not None and on_error is not None:
            on_error(exc)
    except Exception:  # a failing callback must not hide the next one
        log.exception("bridge.produce callback failed")


_default_lock = threading.Lock()
_default: tuple[int, Producer] | None = None


def default_producer() -> Producer:
    """This process's producer, configured from ``BRIDGE_CONFIG``; created on first use and
    again after a fork (a Kafka producer must not cross one).

    :raises ConfigError: the configuration is missing or invalid.
    """
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():
            conf = settings()
            _default = (os.getpid(), Producer(conf.kafka, conf.produce))
        return _default[1]


def produce(
    topic: str, value: Value, key: Value = None, headers: HeadersIn = None, **retry: int
) -> Produced:
    """Write one record with this process's producer; see :meth:`Producer.produce`."""
    return default_producer().produce(topic, value, key, headers, **retry)


def produce_async(
    topic: str,
    value: Value,
    key: Value = None,
    headers: HeadersIn = None,
    *,
    on_success: OnSuccess | None = None,
    on_error: OnError | None = None,
    **retry: int,
) -> Future[Produced]:
    """Write one record without blocking; see :meth:`Producer.produce_async`."""
    return default_producer().produce_async(
        topic, value, key, headers, on_success=on_success, on_error=on_error, **retry
    )


def stats() -> ProduceStats:
    """Counts of this process's producer (see :class:`ProduceStats`)."""
    return default_producer().stats()
