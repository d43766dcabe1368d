"""Writing to Kafka with our own retries (Kafka I/O), shared by the dead-letter producer and
``bridge.produce``.

One lazily created idempotent ``acks=all`` producer per sender. kafka-python already retries
inside one attempt (unbounded, until ``delivery_timeout_ms``) with the same producer id and
sequence numbers, so a batch resent after a lost acknowledgement is written once. We start a
new attempt only when an attempt failed as a whole: its delivery timeout expired (say, the
broker was down), or Kafka gave a retryable error back. Writes are at least once: a batch
expires whether it waits unsent or was sent and its answer is late (a broker restarting or
frozen), and a broker may have written a sent one; the next attempt is a new batch, which
idempotence does not match to the old one, so the record is then written twice (seen in the
chaos suite: a dead letter at two offsets, the first from the expired attempt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import (
    BrokerNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    UnknownTopicOrPartitionError,
    for_code,
)

from bridge.backends.kafka.auth import security_configs
from bridge.backoff import exponential_ms
from bridge.settings import KafkaSettings, SendRetrySettings

log = logging.getLogger(__name__)

Header = tuple[str, bytes | None]
"""A header to write; ``None`` is a null value, written as empty bytes (see :func:`sendable`)."""
RetryHook = Callable[[KafkaError, int, int], None]
"""Called before each retry with the error, the retry number (1-based) and its delay in ms."""

# kafka-python flags BROKER_NOT_AVAILABLE as final, but a broker that comes back cures it.
_RETRYABLE_UNFLAGGED: tuple[type[KafkaError], ...] = (BrokerNotAvailableError,)
_RECONNECT_BACKOFF_MAX_MS = 1_000  # kafka-python's 30 s would outlast our retries


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to write: bytes only (callers encode)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[Header] = ()


def sendable(headers: Iterable[Header]) -> list[tuple[str, bytes]]:
    """``headers`` as kafka-python's ``KafkaProducer.send`` takes them: a null value (``None``)
    becomes empty bytes, since it refuses ``None`` (``TypeError``, kafka-python 3.0), though
    Kafka's format and its consumer have null header values."""
    return [(name, b"" if value is None else value) for name, value in headers]


def is_retryable(exc: BaseException, *, missing_topic_is_final: bool = False) -> bool:
    """True for Kafka errors worth another attempt: leader moves, not enough replicas, request
    timeouts, network trouble, a broker that is down.

    :param missing_topic_is_final: the broker said the topic does not exist, and it creates
        none (``auto.create.topics.enable=false``): waiting cannot help.
    """
    if missing_topic_is_final and isinstance(exc, UnknownTopicOrPartitionError):
        return False
    if isinstance(exc, _RETRYABLE_UNFLAGGED):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


def retry_delays_ms(policy: SendRetrySettings) -> list[int]:
    """The delay before each retry the policy allows (ms), in order."""
    return [
        exponential_ms(n, initial_ms=policy.retry_backoff_ms, max_ms=policy.retry_backoff_max_ms)
        for n in range(1, policy.retries + 1)
    ]


class RetryingSender:
    """Writes records and waits for each; retries retryable Kafka errors with exponential
    backoff. Thread-safe; create one per process (a Kafka producer must not cross a fork).

    :param check_topics: before the first write to a topic, ask the broker whether it exists,
        and refuse a missing one at once (otherwise kafka-python waits ``max_block_ms`` for
        metadata that never comes, as if the broker were down).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        policy: SendRetrySettings,
        *,
        client_suffix: str,
        check_topics: bool = False,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._kafka = kafka
        self._policy = policy
        self._client_id = f"{kafka.client_id}-{client_suffix}"
        self._check_topics = check_topics
        self._on_retry = on_retry
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._known_topics: set[str] = set()

    def send(
        self, out: Outgoing, *, policy: SendRetrySettings | None = None, what: str = ""
    ) -> tuple[int, int]:
        """Write ``out`` and wait until Kafka has it.

        :param policy: retries and backoff for this call (default: the sender's).
        :param what: how log lines name the record.
        :returns: the partition and offset written.
        :raises KafkaError: the final error: a non-retryable one at once, or the last
            retryable one once the retries are spent (tell them apart with
            :meth:`is_final`).
        """
        policy = policy or self._policy
        delays = retry_delays_ms(policy)
        attempt = 0
        while True:
            try:
                return self._attempt(out)
            except KafkaError as exc:
                if self.is_final(exc) or attempt >= len(delays):
                    raise
                delay_ms = delays[attempt]
                attempt += 1
                log.warning(
                    "write to %s failed (%r), retry %d in %d ms: %s",
                    out.topic, exc, attempt, delay_ms, what or "record",
                )  # fmt: skip
                if self._on_retry is not None:
                    self._on_retry(exc, attempt, delay_ms)
                time.sleep(delay_ms / 1000)

    def is_final(self, exc: BaseException) -> bool:
        """True when retrying ``exc`` cannot help."""
        return not is_retryable(exc, missing_topic_is_final=self._check_topics)

    def _attempt(self, out: Outgoing) -> tuple[int, int]:
        if self._check_topics:
            self._ensure_topic(out.topic)
        producer, future = self._connected(), None
        try:
            future = producer.send(
                out.topic, value=out.value, key=out.key, headers=sendable(out.headers)
            )
            meta: Any = future.get(timeout=self._policy.delivery_timeout_ms / 1000 + 5)
        except KafkaTimeoutError as exc:
            self._known_topics.discard(out.topic)  # deleted meanwhile? the next attempt asks
            if future is None or not future.is_done:
                self._discard_wedged(producer, exc)
            raise
        return int(meta.partition), int(meta.offset)

    def _discard_wedged(self, producer: KafkaProducer, exc: KafkaTimeoutError) -> None:
        """Close a producer that timed out before its send was answered (it found no metadata
        within ``max_block_ms``, or left the send unanswered past its own delivery timeout);
        the next attempt creates a new one. Both were seen after broker restarts, for good:
        once kafka-python's idempotent producer had expired a batch it was retrying, it
        answered no later send; a producer found no metadata again, each send failing after
        ``max_block_ms`` (the chaos suite's own producer, 140 s until the run gave up)."""
        log.warning("Kafka producer %s timed out before Kafka answered (%s): replacing it",
                    self._client_id, exc)  # fmt: skip
        with self._lock:
            if self._producer is producer:
                self._producer = None
        close_producer(producer, timeout_s=0)

    def _connected(self) -> KafkaProducer:
        # Created on first write, inside its error handling: Kafka may be down right now.
        with self._lock:
            if self._producer is None:
                timeout_ms = self._policy.delivery_timeout_ms
                self._producer = KafkaProducer(
                    acks="all",
                    enable_idempotence=True,
                    delivery_timeout_ms=timeout_ms,
                    max_block_ms=timeout_ms,  # send() waits for metadata at most this long
                    **self._client_configs(),
                )
            return self._producer

    def _client_configs(self) -> dict[str, Any]:
        timeout_ms = self._policy.delivery_timeout_ms
        return {
            "bootstrap_servers": self._kafka.bootstrap_servers.split(","),
            "client_id": self._client_id,
            "bootstrap_timeout_ms": timeout_ms,
            "request_timeout_ms": min(self._kafka.request_timeout_ms, timeout_ms),
            "reconnect_backoff_max_ms": _RECONNECT_BACKOFF_MAX_MS,
            **security_configs(self._kafka),
        }

    def _ensure_topic(self, topic: str) -> None:
        """:raises KafkaError: the broker's error for ``topic`` (e.g. it does not exist), or
        the broker could not be asked."""
        if topic in self._known_topics:
            return
        with self._lock:
            if self._admin is None:
                self._admin = KafkaAdminClient(**self._client_configs())
            [meta] = self._admin.describe_topics([topic])
        code = int(meta.get("error_code", 0))
        if code:
            raise for_code(code)(f"topic {topic!r}")
        self._known_topics.add(topic)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the producer (and the admin client of the topic checks)."""
        with self._lock:
            producer, admin = self._producer, self._admin
            self._producer = self._admin = None
        if producer is not None:
            close_producer(producer, timeout_s)
        if admin is not None:
            admin.close()


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close ``producer``, even with sends still pending (they are abandoned, logged).

    kafka-python's ``close`` raises ``KafkaTimeoutError`` from its flush when sends are still
    pending and leaves the producer open; its ``__del__`` then tries again and raises where
    nobody can catch it.
    """
    try:
        producer.close(timeout=timeout_s)
    except KafkaError as exc:
        log.warning("Kafka producer closed with sends pending after %.1f s: %s", timeout_s, exc)
        if producer._sender is not None:  # kafka-python offers no public way
            producer._sender.force_close()
        producer._closed = True
