"""The bridge loop: poll Kafka -> route -> publish to Celery -> commit (owns the KafkaConsumer).

One iteration::

    reconcile pauses (broker down? route queues too deep? ordered keys full? a dead-letter
    flood?) -> poll -> build
    one task message per record (undecodable records: dead-letter now) -> enqueue the batch in
    one Redis script (ordered routes: append to key FIFOs) -> accept its offsets -> commit the
    accepted prefix of every partition

The batch's way from the poll to accepted offsets is :mod:`bridge.consumer.handoff`'s; records
and batches that cannot be decoded are :mod:`bridge.consumer.undecodable`'s.

An ordered record refused because its key or partition holds too many records stops its
partition there: the partition is rewound to it and paused until the FIFO drains.

If the enqueue fails nothing of the batch was enqueued: every partition of the batch is rewound
to its first record, all partitions are paused, and the loop keeps polling (so the bridge stays
in its group) until an exponential backoff lets it try again.

kafka-python runs rebalance listeners on its IO thread, where a blocking commit is not allowed:
on revoke the listener drops the partitions (under a lock shared with the loop) and commits
what they had accepted with ``commit_async``. Should that commit be lost, the new owner
re-consumes those records, and the published watermark in Redis keeps it from enqueueing any of
them a second time.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bridge.backends.kafka.dead_letters import DeadLetterOffice, DeadLetterProducer
from bridge.backends.kafka.topics import DeadLetterTopics
from bridge.backends.redis import route_pauses
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.ordering import KeyQueues
from bridge.backends.redis.outcomes import OutcomeReader
from bridge.consumer import batches, commits
from bridge.consumer.assignment import Assignment
from bridge.consumer.backpressure import Backpressure, limits_of
from bridge.consumer.commits import Commits
from bridge.consumer.duties import Duties
from bridge.consumer.flood import Breakers
from bridge.consumer.gathering import Gathering, shapes_of
from bridge.consumer.handoff import Handoff
from bridge.consumer.intake import Intake
from bridge.consumer.kafka_consumer import START_BOOTSTRAP_MS as _START_BOOTSTRAP_MS
from bridge.consumer.kafka_consumer import (
    ConsumerFactory,
    Rebalances,
    await_topic_metadata,
    connect,
    make_consumer,
)
from bridge.consumer.operator_pauses import OperatorPauses
from bridge.consumer.pauses import Outage, Pauses, changes
from bridge.consumer.reporting import Reporter
from bridge.consumer.undecodable import BadBatches, UndecodableLetters
from bridge.hooks import BridgeHooks, HookChain, LoopState
from bridge.offsets import Partition
from bridge.routing import Router
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)


class Bridge:
    """Consume the routed topics in one consumer group and hand every record to Celery."""

    def __init__(
        self,
        settings: BridgeSettings,
        hooks: Sequence[BridgeHooks] = (),
        *,
        consumer_factory: ConsumerFactory | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        """:param consumer_factory: makes the Kafka consumer (default :func:`make_consumer`).
        :param dispatcher: publishes to Celery (default: one for ``settings.celery``)."""
        self.settings = settings
        self.hooks = HookChain(hooks)
        self.member = f"{settings.kafka.client_id}@{socket.gethostname()}:{os.getpid()}"
        self.router = Router.from_settings(settings)
        batches.check_codecs()
        self._make_consumer = consumer_factory or make_consumer
        self._stopping = threading.Event()  # set by stop(), whenever it comes
        self._lock = threading.Lock()  # the assignment: loop thread vs. IO thread (rebalances)
        self._assignment = Assignment()
        self._dispatcher = dispatcher or Dispatcher(settings.celery, settings.kafka.group_id)
        self._key_queues = KeyQueues(self._dispatcher.client, self.group_id)
        self._breakers = Breakers(
            OutcomeReader(self._dispatcher.client, self.group_id),
            self.router.topics,
            settings.breaker,
        )
        # One per process, shared by the loop (undecodable records) and the dead-letter writer:
        # thread-safe, and its Kafka client is only created on the first write.
        self._dead_letter_producer = DeadLetterProducer(settings.kafka, settings.dead_letter)
        self._dead_letter_topics = DeadLetterTopics(
            settings.kafka, self.router.routes, bootstrap_timeout_ms=_START_BOOTSTRAP_MS
        )
        self._consumer: KafkaConsumer | None = None
        self._duties = Duties(settings, self.router.routes, self._dead_letter_producer, self.hooks)
        celery = settings.celery
        outage = Outage(celery.publish_retry_backoff_ms, celery.publish_retry_backoff_max_ms)
        operator = OperatorPauses(
            partial(route_pauses.paused, self._dispatcher.client, self.group_id),
            self.router.topics,
        )
        self._pauses = Pauses(self._assignment, self._lock, outage=outage,
                              backpressure=Backpressure(limits_of(self.router.routes)),
                              breakers=self._breakers, operator=operator,
                              queue_depths=self._dispatcher.queue_depths,
                              watched_sizes=self._key_queues.sizes)  # fmt: skip
        self._commits = Commits(self._assignment, self._lock, self.hooks)
        self._reporter = Reporter(self.hooks, self.member, self.group_id, self._assignment,
                                  self._lock, self._pauses, self._breakers)  # fmt: skip
        intake = Intake(self.router, self._dispatcher, self._key_queues, self._breakers,
                        self._seek)  # fmt: skip
        client = self._dispatcher.client
        office = DeadLetterOffice(
            self._dead_letter_producer, DeadLetterStore(client, self.group_id)
        )
        letters = UndecodableLetters(self.group_id, self.router, office, client, self.hooks)
        self._handoff = Handoff(self._assignment, self._lock, intake,
                                self._dispatcher.publish, letters, outage, self.hooks,
                                self._seek, stall_timeout_ms=settings.stall_timeout_ms,
                                gathering=Gathering(shapes_of(self.router.routes)))  # fmt: skip
        self._bad_batches = BadBatches(letters, self.router, self._assignment, self._lock, outage,
                                       self.hooks, settle=self._flush,
                                       max_records=settings.kafka.max_poll_records)  # fmt: skip

    @property
    def group_id(self) -> str:
        """The consumer group this bridge consumes in."""
        return self.settings.kafka.group_id

    @property
    def running(self) -> bool:
        """Whether the bridge has not been asked to stop (it may still be starting)."""
        return not self._stopping.is_set()

    def run(self) -> None:
        """Consume until :meth:`stop`; then commit what was accepted and leave the group.

        Kafka unreachable at start is waited for (see :meth:`start`); a stop asked for at any
        time, start-up included, ends the run cleanly.
        """
        try:
            consumer = self.start()
            if consumer is None:
                return
            self._duties.start()
            topics = ", ".join(self.router.topics)
            log.info("bridge started: group %s, topics %s", self.group_id, topics)
            while self.running:
                self.step(consumer)
        finally:
            self.close()

    def step(self, consumer: KafkaConsumer) -> None:
        """One iteration: pause and resume, poll, settle the batch in flight and enqueue the
        one polled, commit what was accepted."""
        self._reconcile_pauses(consumer)
        batch = self._poll(consumer)
        self._ensure_dead_letter_topics()  # of a topic just assigned, before dispatch
        self._reporter.polled(batch)
        self._handoff.take(batch, consumer)
        self._commits.commit_async(consumer)
        self._reporter.report(consumer)

    def start(self) -> KafkaConsumer | None:
        """Create the missing dead-letter topics and the consumer, and subscribe; while Kafka
        cannot be reached, try again (see :func:`connect`).

        :returns: the consumer; ``None`` if asked to stop first.
        :raises KafkaError: a Kafka error that is not retriable.
        """
        consumer = self._consumer = connect(self._connect, self._stopping)
        if consumer is not None:
            consumer.subscribe(self.router.topics, listener=Rebalances(self.assigned, self.revoked))
            await_topic_metadata(consumer, self.router.topics)
        return consumer

    def _connect(self) -> KafkaConsumer:
        self._dead_letter_topics.ensure()
        return self._make_consumer(self.settings.kafka)

    def _poll(self, consumer: KafkaConsumer) -> dict[Partition, list[Any]]:
        """One poll; nothing while the broker is unreachable.

        kafka-python 3.0 lets a connection error escape ``poll()`` when the broker goes away
        while it looks for the group coordinator (the metadata refresh it then waits for
        fails too); it keeps its positions and reconnects on the next poll.

        :raises KafkaError: a Kafka error that is not retriable.
        """
        timeout_ms = self.settings.kafka.poll_timeout_ms
        due_s = self._handoff.due_in_s()  # a held batch is not kept waiting by the poll
        if due_s is not None:
            timeout_ms = min(timeout_ms, math.ceil(due_s * 1000))
        try:
            batch: dict[TopicPartition, list[Any]] = consumer.poll(
                timeout_ms=timeout_ms,
                max_records=self.settings.kafka.max_poll_records,
            )
        except KafkaError as exc:
            if not exc.retriable:
                self._bad_batches.skip(consumer, exc)
                return {}
            log.warning("poll failed, polling again in %.1f s: %r", _POLL_RETRY_S, exc)
            self._stopping.wait(_POLL_RETRY_S)  # the broker is down or restarting: no spin
            return {}
        except Exception as exc:  # a codec library's own error: data that does not decompress
            self._bad_batches.skip(consumer, exc)
            return {}
        return {Partition(*tp): records for tp, records in batch.items()}

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (safe from a signal handler, and
        before or during start-up)."""
        self._stopping.set()

    # -- rebalances (called on kafka-python's IO thread) ------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions given to this bridge: consume them from their committed offsets."""
        partitions = set(partitions)
        with self._lock:
            self._assignment.assign(partitions)
        if partitions:
            log.info("partitions assigned: %s", _names(partitions))

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions taken away: stop dispatching them, commit what they accepted, forget."""
        partitions = set(partitions)
        with self._lock:
            pending = self._assignment.revoke(partitions)
            self._handoff.forget(Partition(*tp) for tp in partitions)
        if partitions:
            log.info("partitions revoked: %s", _names(partitions))
        if pending and self._consumer is not None:
            self._consumer.commit_async(commits.request(pending))

    def _seek(self, tp: tuple[str, int], offset: int) -> None:
        assert self._consumer is not None
        self._handoff.trim(Partition(*tp), offset)
        self._consumer.seek(TopicPartition(*tp), offset)

    def _flush(self) -> None:
        """Settle the batch in flight and enqueue what batched routes hold."""
        assert self._consumer is not None
        self._handoff.flush(self._consumer)

    def _reconcile_pauses(self, consumer: KafkaConsumer) -> None:
        wanted = self._pauses.reconcile(self._handoff.queued)
        pause, resume = changes(wanted, consumer.paused())
        if pause:
            consumer.pause(*(TopicPartition(*tp) for tp in pause))
        if resume:
            consumer.resume(*(TopicPartition(*tp) for tp in resume))

    def state(self) -> LoopState:
        """A snapshot of this bridge: its partitions, their offsets, lag and pauses (loop
        thread only: it asks the consumer for each partition's end offset)."""
        assert self._consumer is not None
        return self._reporter.state(self._consumer)

    # -- setup and teardown ----------------------------------------------------------------

    def _ensure_dead_letter_topics(self) -> None:
        if self._dead_letter_topics.complete:  # the usual case, on every loop iteration
            return
        with self._lock:
            assigned = self._assignment.topics
        self._dead_letter_topics.ensure_assigned(assigned)

    def close(self) -> None:
        """Stop the background threads, commit what was accepted, leave the group, let go."""
        timeout_ms = self.settings.kafka.shutdown_timeout_ms
        self._duties.stop(timeout_s=timeout_ms / 1000)
        if self._consumer is not None:
            self._handoff.settle()  # the batch in flight: accept it, so that it is committed
            self._commits.commit(self._consumer, timeout_ms=timeout_ms)
            self._consumer.close(autocommit=False, timeout_ms=timeout_ms)
            self._consumer = None
        self._handoff.close()
        self._dead_letter_producer.close(timeout_s=timeout_ms / 1000)
        self._dispatcher.close()
        self.hooks.on_stop()
        log.info("bridge stopped: group %s", self.group_id)


_POLL_RETRY_S = 0.5  # after a poll that failed because the broker is unreachable


def _names(partitions: Iterable[Any]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
