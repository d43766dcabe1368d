"""The bridge loop: poll Kafka -> route -> publish to Celery -> commit (owns the KafkaConsumer).

Offsets are committed after every batch, before the next ``poll()``. Rebalances happen inside
``poll()``, so when partitions are revoked everything accepted has already been committed (or
the commit failed and the new owner re-consumes those records): the revoke listener, which runs
on kafka-python's IO thread where a blocking commit is not allowed, only drops local state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from bridge.backoff import exponential_ms
from bridge.deadletter import DeadLetter, DeadLetterProducer, ErrorInfo, utc_now_iso
from bridge.dispatch import Dispatcher, publisher_app
from bridge.errors import PublishError, UndecodableRecordError
from bridge.failures import Reason
from bridge.offsets import OffsetTracker, Partition
from bridge.record import Envelope, Record, decode_value, task_id
from bridge.routing import Route, Router
from bridge.settings import BridgeSettings
from bridge.topics import admin_client, ensure_dead_letter_topics

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._bridge.offsets.forget(revoked)
        if revoked:
            log.info("partitions revoked: %s", _names(revoked))

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        if assigned:
            log.info("partitions assigned: %s", _names(assigned))


class Bridge:
    """Consume the routed topics in one consumer group and hand every record to Celery."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.router = Router.from_settings(settings)
        self.offsets = OffsetTracker()
        self.running = False
        self._dispatcher = Dispatcher(publisher_app(settings.celery))
        self._dead_letters: DeadLetterProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._publish_failures = 0
        self._resume_at: float | None = None

    @property
    def group_id(self) -> str:
        """The consumer group this bridge consumes in."""
        return self.settings.kafka.group_id

    def run(self) -> None:
        """Consume until :meth:`stop`; then commit what was accepted and leave the group."""
        self._prepare_topics()
        consumer = self._consumer = self._make_consumer()
        consumer.subscribe(self.router.topics, listener=_Rebalance(self))
        self._await_topic_metadata(consumer)
        self.running = True
        log.info(
            "bridge started: group %s, topics %s", self.group_id, ", ".join(self.router.topics)
        )
        try:
            while self.running:
                self._maybe_resume()
                batch = consumer.poll(
                    timeout_ms=self.settings.kafka.poll_timeout_ms,
                    max_records=self.settings.kafka.max_poll_records,
                )
                self._handle_batch(batch)
                self._commit()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (safe from a signal handler)."""
        self.running = False

    # -- the batch -------------------------------------------------------------------------

    def _handle_batch(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        failed = False
        for tp, records in batch.items():
            if failed:
                self._rewind(tp, records[0].offset)
            else:
                failed = not self._handle_partition(tp, records)

    def _handle_partition(self, tp: TopicPartition, records: Sequence[Any]) -> bool:
        """Accept records in offset order; on a publish failure rewind to it and say False."""
        route = self.router.route_for(tp.topic)
        for msg in records:
            try:
                self._accept(route, msg)
            except PublishError as exc:
                self._rewind(tp, msg.offset)
                self._back_off(exc)
                return False
            self.offsets.accept(Partition(tp.topic, tp.partition), msg.offset)
        self._publish_failures = 0
        return True

    def _accept(self, route: Route, msg: Any) -> None:
        record = _to_record(msg, route)
        try:
            decode_value(record.raw_value, route.value_format)
        except UndecodableRecordError as exc:
            self._dead_letter_undecodable(route, record, exc)
            return
        task = self._dispatcher.publish(route, Envelope(record, self.group_id, route.dlt_topic))
        log.debug("published %r as %s to %s", record, task, route.queue)

    def _dead_letter_undecodable(self, route: Route, record: Record, exc: Exception) -> None:
        now = utc_now_iso()
        dl = DeadLetter(
            record=record,
            group_id=self.group_id,
            dlt_topic=route.dlt_topic,
            reason=Reason.UNDECODABLE,
            error=ErrorInfo.of(exc),
            attempts=0,
            task=route.task,
            task_id=task_id(self.group_id, record.topic, record.partition, record.offset),
            first_failure_at=now,
            dead_lettered_at=now,
        )
        try:
            self._dead_letter_producer().write(dl)
        except Exception as err:
            raise PublishError(f"undecodable {record!r} not dead-lettered: {err}") from err
        log.warning("undecodable %r dead-lettered to %s: %s", record, route.dlt_topic, exc)

    # -- publish failures: pause everything, keep polling, resume after a backoff ---------

    def _rewind(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        self._consumer.seek(tp, offset)

    def _back_off(self, exc: Exception) -> None:
        assert self._consumer is not None
        self._publish_failures += 1
        delay_ms = exponential_ms(
            self._publish_failures,
            initial_ms=self.settings.celery.publish_retry_backoff_ms,
            max_ms=self.settings.celery.publish_retry_backoff_max_ms,
        )
        log.error("Celery broker unavailable, pausing consumption for %d ms: %s", delay_ms, exc)
        self._consumer.pause(*self._consumer.assignment())
        self._resume_at = time.monotonic() + delay_ms / 1000

    def _maybe_resume(self) -> None:
        if self._resume_at is None or time.monotonic() < self._resume_at:
            return
        assert self._consumer is not None
        self._resume_at = None
        self._consumer.resume(*self._consumer.paused())
        log.info("resuming consumption: retrying the publish")

    # -- commits ---------------------------------------------------------------------------

    def _commit(self) -> None:
        assert self._consumer is not None
        pending = self.offsets.to_commit()
        if not pending:
            return
        offsets = {
            TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
            for tp, offset in pending.items()
        }
        try:
            self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("commit of %s failed, will retry: %r", _names(offsets), exc)
            return
        self.offsets.committed(pending)

    # -- setup and teardown ----------------------------------------------------------------

    def _make_consumer(self) -> KafkaConsumer:
        k = self.settings.kafka
        return KafkaConsumer(
            bootstrap_servers=k.bootstrap_servers.split(","),
            group_id=k.group_id,
            client_id=k.client_id,
            enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset,
            max_poll_records=k.max_poll_records,
            session_timeout_ms=k.session_timeout_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            request_timeout_ms=k.request_timeout_ms,
        )

    def _await_topic_metadata(self, consumer: KafkaConsumer) -> None:
        # Like librdkafka, join the group only once the routed topics' partitions are known:
        # kafka-python 3.0 may otherwise lead a first assignment with no partitions and then
        # miss the metadata change that should trigger a rebalance.
        for topic in self.router.topics:
            if not consumer.partitions_for_topic(topic):
                log.warning("topic %s does not exist (yet): nothing to consume from it", topic)

    def _prepare_topics(self) -> None:
        admin = admin_client(self.settings.kafka)
        try:
            ensure_dead_letter_topics(admin, self.router.routes)
        finally:
            admin.close()

    def _dead_letter_producer(self) -> DeadLetterProducer:
        if self._dead_letters is None:
            self._dead_letters = DeadLetterProducer(self.settings.kafka, self.settings.dead_letter)
        return self._dead_letters

    def _shutdown(self) -> None:
        if self._consumer is not None:
            self._commit()
            self._consumer.close(autocommit=False)
            self._consumer = None
        if self._dead_letters is not None:
            self._dead_letters.close()
        self._dispatcher.close()
        log.info("bridge stopped: group %s", self.group_id)


def _to_record(msg: Any, route: Route) -> Record:
    headers = tuple((name, value or b"") for name, value in (msg.headers or ()))
    return Record(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=msg.timestamp,
        key=msg.key,
        raw_value=msg.value,
        headers=headers,
        value_format=route.value_format,
    )


def _names(partitions: Any) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
