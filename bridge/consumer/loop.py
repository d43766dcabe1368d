"""The bridge loop: poll Kafka -> route -> publish to Celery -> commit (owns the KafkaConsumer).

One iteration::

    reconcile pauses (broker down? route queues too deep? ordered keys full? a dead-letter
    flood?) -> poll -> build
    one task message per record (undecodable records: dead-letter now) -> enqueue the batch in
    one Redis script (ordered routes: append to key FIFOs) -> accept its offsets -> commit the
    accepted prefix of every partition

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

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from bridge.backends.kafka.auth import security_configs
from bridge.backends.kafka.dead_letters import DeadLetterOffice, DeadLetterProducer, Fate
from bridge.backends.kafka.patches import await_pending_joins
from bridge.backends.kafka.topics import DeadLetterTopics
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message, Ordered
from bridge.backends.redis.ordering import KeyQueues
from bridge.backends.redis.outcomes import OutcomeReader
from bridge.backends.redis.outcomes import count as count_outcome
from bridge.backoff import exponential_ms
from bridge.consumer import batches, incarnations
from bridge.consumer.backpressure import Backpressure, Limit, PartitionHolds, pause_reasons
from bridge.consumer.duties import Duties
from bridge.consumer.flood import Breakers
from bridge.consumer.pipeline import (
    Batch,
    InFlight,
    Publisher,
    Undecodable,
    partitions_of,
    rewind_points,
)
from bridge.deadletter import DeadLetter, ErrorInfo, utc_now_iso
from bridge.errors import (
    PublishError,
    UndecodableBatchError,
    UndecodableRecordError,
)
from bridge.failures import Reason
from bridge.hooks import BridgeHooks, HookChain, LoopState, Outcome, PartitionState, Refusal
from bridge.logs import at
from bridge.offsets import OffsetTracker, Partition
from bridge.record import Record, TimestampType, check_value, task_id
from bridge.routing import Route, Router
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._bridge.revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._bridge.assigned(assigned)


class Bridge:
    """Consume the routed topics in one consumer group and hand every record to Celery."""

    def __init__(self, settings: BridgeSettings, hooks: Sequence[BridgeHooks] = ()) -> None:
        self.settings = settings
        self.hooks = HookChain(hooks)
        self.member = f"{settings.kafka.client_id}@{socket.gethostname()}:{os.getpid()}"
        self._paused: dict[TopicPartition, str] = {}
        self._state_due = 0.0
        self.router = Router.from_settings(settings)
        batches.check_codecs()
        self.offsets = OffsetTracker()
        self._stopping = threading.Event()  # set by stop(), whenever it comes
        self._lock = threading.Lock()  # offsets and _assigned: loop thread vs. IO thread
        # Assigned partitions -> the assignment (a count of assignments) that gave each.
        self._assigned: dict[TopicPartition, int] = {}
        self._assignments = 0
        self._dispatcher = Dispatcher(settings.celery, settings.kafka.group_id)
        self._publisher = Publisher(self._dispatcher.publish)
        self._in_flight: InFlight | None = None
        self._commit_future: Any = None  # kafka-python's future of the commit in flight
        self._backpressure = Backpressure(_limits(self.router.routes))
        self._holds = PartitionHolds()
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
        self._topics_retry_at = 0.0
        self._consumer: KafkaConsumer | None = None
        self._broker_failures = 0
        self._broker_retry_at: float | None = None
        self._commit_failing = False
        self._dead_letters = DeadLetterOffice(
            self._dead_letter_producer, DeadLetterStore(self._dispatcher.client, self.group_id)
        )
        self._duties = Duties(settings, self.router.routes, self._dead_letter_producer, self.hooks)

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

        Kafka unreachable at start is waited for (see :meth:`_start`); a stop asked for at any
        time, start-up included, ends the run cleanly.
        """
        try:
            consumer = self._start()
            if consumer is None:
                return
            self._duties.start()
            topics = ", ".join(self.router.topics)
            log.info("bridge started: group %s, topics %s", self.group_id, topics)
            while self.running:
                self._reconcile_pauses()
                batch = self._poll(consumer)
                self._ensure_dead_letter_topics()  # of a topic just assigned, before dispatch
                self._observe_poll(batch)
                self._handle_batch(batch)
                self._commit_async()
                self._report_state()
        finally:
            self._shutdown()

    def _start(self) -> KafkaConsumer | None:
        """Create the missing dead-letter topics and the consumer, and subscribe. While Kafka
        cannot be reached, try again with a backoff (1 s doubling up to 30 s).

        :returns: the consumer; ``None`` if asked to stop first.
        :raises KafkaError: a Kafka error that is not retriable.
        """
        attempt = 0
        while self.running:
            try:
                self._dead_letter_topics.ensure()
                consumer = self._consumer = self._make_consumer()
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                attempt += 1
                delay_ms = exponential_ms(attempt, initial_ms=1000, max_ms=30_000)
                log.error("Kafka unreachable at start (attempt %d), trying again in %.1f s: %s",
                          attempt, delay_ms / 1000, exc)  # fmt: skip
                self._stopping.wait(delay_ms / 1000)
                continue
            if attempt:
                log.warning("Kafka reached after %d failed attempt(s)", attempt)
            consumer.subscribe(self.router.topics, listener=_Rebalance(self))
            self._await_topic_metadata(consumer)
            return consumer
        return None

    def _poll(self, consumer: KafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """One poll; nothing while the broker is unreachable.

        kafka-python 3.0 lets a connection error escape ``poll()`` when the broker goes away
        while it looks for the group coordinator (the metadata refresh it then waits for
        fails too); it keeps its positions and reconnects on the next poll.

        :raises KafkaError: a Kafka error that is not retriable.
        """
        try:
            batch: dict[TopicPartition, list[Any]] = consumer.poll(
                timeout_ms=self.settings.kafka.poll_timeout_ms,
                max_records=self.settings.kafka.max_poll_records,
            )
        except KafkaError as exc:
            if not exc.retriable:
                self._skip_undecodable(consumer, exc)
                return {}
            log.warning("poll failed, polling again in %.1f s: %r", _POLL_RETRY_S, exc)
            self._stopping.wait(_POLL_RETRY_S)  # the broker is down or restarting: no spin
            return {}
        except Exception as exc:  # a codec library's own error: data that does not decompress
            self._skip_undecodable(consumer, exc)
            return {}
        return batch

    def _skip_undecodable(self, consumer: KafkaConsumer, exc: Exception) -> None:
        """A record batch kafka-python cannot decode (see :mod:`bridge.consumer.batches`): once the
        batch in flight is accepted, dead-letter what is known of each of its records (their
        coordinates, the error; no key or headers, an empty value; reason ``undecodable``) and
        go on after it. Otherwise (the partition was revoked, rewound, or the broker is down) it
        is fetched and fails again later.

        :raises Exception: ``exc``, when it was not raised decoding a batch.
        """
        bad = batches.find(exc)
        if bad is None:
            raise exc
        bad.discard()  # else kafka-python's next poll at this position never returns
        with self._lock:
            mine = bad.tp in self._assigned
        if not mine:
            return
        offset = consumer.position(bad.tp)
        self._settle(None)  # a failed or refused enqueue rewinds the partition before it
        with self._lock:
            mine = bad.tp in self._assigned
        if not mine or self._broker_retry_at is not None or consumer.position(bad.tp) != offset:
            return  # records before it come again first; so will it
        skip = batches.offsets_to_skip(offset, bad, self.settings.kafka.max_poll_records)
        error = UndecodableBatchError(
            f"{bad.describe()}: Kafka's client cannot decode this record batch: {exc!r}"
        )
        error.__cause__ = exc
        log.error("%s: Kafka's client cannot decode the record batch (%r): dead-lettering "
                  "offsets %d..%d with their coordinates only", bad.describe(), exc, skip[0],
                  skip[-1], extra=at(topic=bad.tp.topic, partition=bad.tp.partition,
                                     offset=offset))  # fmt: skip
        self._dead_letter_offsets(consumer, bad.tp, skip, error)

    def _dead_letter_offsets(
        self, consumer: KafkaConsumer, tp: TopicPartition, offsets: range, error: Exception
    ) -> None:
        """Dead-letter ``offsets`` of ``tp`` as undecodable, accept those written and go on
        after them; stop at the first write that fails (the broker's outage handling takes
        over, and the rest is fetched again once it is over)."""
        route = self.router.route_for(tp.topic)
        partition, done = Partition(tp.topic, tp.partition), offsets.start
        for offset in offsets:
            # No key and an empty value: Kafka's producer needs one of them.
            record = Record(
                tp.topic, tp.partition, offset, -1, None, b"", (), route.value_format,
                timestamp_type=TimestampType.NO_TIMESTAMP_TYPE,
            )  # fmt: skip
            try:
                self._dead_letter_undecodable(route, record, error)
            except PublishError as err:
                self._broker_failed(err)  # paused; it is fetched again once resumed
                break
            with self._lock:
                self.offsets.accept(partition, offset)
            done = offset + 1
        if done > offsets.start:
            self.hooks.after_accept({partition: (offsets.start, done)})
            consumer.seek(tp, done)

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (safe from a signal handler, and
        before or during start-up)."""
        self._stopping.set()

    # -- rebalances (called on kafka-python's IO thread) ------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions given to this bridge: consume them from their committed offsets."""
        partitions = set(partitions)
        with self._lock:
            self._assignments += 1
            self._assigned.update(dict.fromkeys(partitions, self._assignments))
        if partitions:
            log.info("partitions assigned: %s", _names(partitions))

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions taken away: stop dispatching them, commit what they accepted, forget."""
        partitions = set(partitions)
        with self._lock:
            for tp in partitions:
                self._assigned.pop(tp, None)
            pending = {tp: o for tp, o in self.offsets.to_commit().items() if tp in partitions}
            self.offsets.forget(partitions)
            self._holds.forget(partitions)
        if partitions:
            log.info("partitions revoked: %s", _names(partitions))
        if pending and self._consumer is not None:
            self._consumer.commit_async(_commit_request(pending))

    # -- the batch -------------------------------------------------------------------------

    def _handle_batch(self, polled: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Build this poll's messages, settle the batch in flight, then enqueue this one."""
        with self._lock:
            mine = {tp: r for tp, r in polled.items() if r and tp in self._assigned}
            assignment = self._assignments
        topic_ids = incarnations.topic_ids(self._consumer, {tp.topic for tp in mine})
        batch = Batch(self._admit(mine), assignment=assignment, topic_ids=topic_ids)
        try:
            for tp, records in batch.records.items():
                batch.messages += [self._message(tp, msg, batch) for msg in records]
        except PublishError as exc:  # no message template: Redis is down
            self._settle(batch)
            if batch.records:
                self._publish_failed(batch, None, exc, 0.0)
            return
        self._settle(batch)
        if batch.records:
            self._submit(batch)

    def _admit(self, polled: Mapping[TopicPartition, Sequence[Any]]) -> dict[TopicPartition, Any]:
        """The records the flood breakers let through: a probe takes only so many, and the
        partition is rewound to the first record it did not take."""
        admitted: dict[TopicPartition, Any] = {}
        for tp, records in polled.items():
            room = self._breakers.room(tp.topic)
            if room is not None and room < len(records):
                assert self._consumer is not None
                self._consumer.seek(tp, records[room].offset)
                records = records[:room]
            if records:
                self._breakers.admitted(tp.topic, len(records))
                admitted[tp] = records
        return admitted

    def _settle(self, following: Batch | None) -> None:
        """Wait for the batch in flight and accept it; if it failed, rewind both it and
        ``following`` (polled after it), and drop ``following``."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return
        done = flight.result()
        if done.error is not None:
            self._publish_failed(flight.batch, following, done.error, done.seconds)
            return
        outcome = done.outcome
        assert outcome is not None
        self.hooks.after_publish(outcome, done.seconds)
        self._broker_recovered()
        if outcome.skipped:
            log.info("%d re-consumed records were already enqueued: skipped", outcome.skipped)
        held = self._accept(flight.batch, outcome)
        if following is not None:
            following.drop(partitions_of(held))

    def _submit(self, batch: Batch) -> None:
        try:
            for u in batch.undecodable:
                route = self.router.route_for(u.tp.topic)
                self._dead_letter_undecodable(route, u.record, u.error)
        except PublishError as exc:
            self._publish_failed(batch, None, exc, 0.0)
            return
        self._in_flight = self._publisher.submit(batch, self._head_deadline_ms())

    def _publish_failed(
        self, failed: Batch, following: Batch | None, exc: PublishError, seconds: float
    ) -> None:
        self._rewind(rewind_points(failed, following))
        if following is not None:
            following.clear()
        self._broker_failed(exc)
        self.hooks.after_publish_failed(failed.size, exc, seconds)

    def _accept(self, batch: Batch, outcome: Outcome) -> list[Refusal]:
        """Accept the batch's records up to what was refused, on partitions assigned since
        before it was polled: one revoked and assigned again meanwhile starts over from its
        committed offset (the records of the batch were enqueued; re-consumed, they are
        skipped), and accepting the batch there would go backwards.

        :returns: the refusals that hold their partition (sent back to the refused record).
        """
        refused = {(r.topic, r.partition): r.offset for r in outcome.refused}
        spans: dict[Partition, tuple[int, int]] = {}
        with self._lock:
            current = {tp for tp, since in self._assigned.items() if since <= batch.assignment}
            for m in batch.messages:
                tp = TopicPartition(m.topic, m.partition)
                if tp in current and m.offset < refused.get(tp, m.offset + 1):
                    p = Partition(m.topic, m.partition)
                    self.offsets.accept(p, m.offset)
                    spans[p] = (spans.get(p, (m.offset, 0))[0], m.offset + 1)
            held = [r for r in outcome.refused if TopicPartition(r.topic, r.partition) in current]
            for r in held:
                self._holds.hold(TopicPartition(r.topic, r.partition), watch=r.watch, kind=r.full,
                                 limit=r.limit)  # fmt: skip
        self.hooks.after_accept(spans)
        assert self._consumer is not None
        for r in held:
            self._consumer.seek(TopicPartition(r.topic, r.partition), r.offset)
            where = at(topic=r.topic, partition=r.partition, offset=r.offset)
            if r.full == "watermark":
                log.error(incarnations.stopped_why(r.topic, r.partition, r.offset, r.watch),
                          extra=where)  # fmt: skip
                continue
            log.warning("%s[%d]@%d: its %s has %d records waiting: partition paused",
                        r.topic, r.partition, r.offset, r.full, r.limit, extra=where)  # fmt: skip
        return held

    def _message(self, tp: TopicPartition, msg: Any, batch: Batch) -> Message:
        route = self.router.route_for(tp.topic)
        try:
            check_value(msg.value, route.value_format)
        except UndecodableRecordError as exc:  # dead-lettered when its batch is enqueued
            batch.undecodable.append(Undecodable(tp, _to_record(msg, route), exc))
            return Message(msg.topic, msg.partition, msg.offset, None, None)
        if not route.ordered:
            return self._dispatcher.consumed(route, msg)
        ordered = Ordered(
            self._key_queues.fifo(msg.topic, msg.key, msg.partition),
            route.max_waiting_per_key,
            route.max_waiting_per_partition,
        )
        return self._dispatcher.consumed(route, msg, ordered)

    def _head_deadline_ms(self) -> int:
        return int(time.time() * 1000) + self.settings.stall_timeout_ms

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
        self._send_undecodable(dl, exc)
        if route.breaker_window_s is not None:
            count_outcome(self._dispatcher.client, self.group_id, record.topic, dead=True,
                          window_s=route.breaker_window_s, now_s=time.time())  # fmt: skip
        self.hooks.after_dead_letter(record.topic, str(Reason.UNDECODABLE), False)

    def _send_undecodable(self, dl: DeadLetter, exc: Exception) -> None:
        """Write the dead letter of an undecodable record; one Kafka refuses for good (too
        large…) is parked in Redis (``status`` shows it, ``replay --parked`` writes it) rather
        than stall every partition retrying it.

        :raises PublishError: not written (its record is fetched again), or refused and not
            parked either.
        """
        record = dl.record
        try:
            posted = self._dead_letters.send(dl)
        except redis.RedisError as err:  # only parking touches Redis
            raise PublishError(f"{record!r}: dead letter refused, not parked: {err!r}") from err
        except Exception as err:
            raise PublishError(f"undecodable {record!r} not dead-lettered: {err}") from err
        where = at(record, task_id=dl.task_id)
        if posted.fate is Fate.PARKED:
            log.critical("undecodable %r: Kafka refuses its dead letter, parked in Redis: %s",
                         record, posted.error, extra=where)  # fmt: skip
        else:
            log.warning("undecodable %r dead-lettered to %s: %s", record, dl.dlt_topic, exc,
                        extra=where)  # fmt: skip

    def _rewind(self, points: Mapping[TopicPartition, int]) -> None:
        assert self._consumer is not None
        with self._lock:
            assigned = set(self._assigned)
        for tp, offset in points.items():
            if tp in assigned:  # a revoked partition's new owner starts from its commit
                self._consumer.seek(tp, offset)

    # -- pauses: broker outages and backpressure --------------------------------------------

    def _broker_failed(self, exc: Exception) -> None:
        self._broker_failures += 1
        delay_ms = exponential_ms(
            self._broker_failures,
            initial_ms=self.settings.celery.publish_retry_backoff_ms,
            max_ms=self.settings.celery.publish_retry_backoff_max_ms,
        )
        self._broker_retry_at = time.monotonic() + delay_ms / 1000
        log.error(
            "Celery broker unavailable (attempt %d): all partitions paused, retry in %d ms: %s",
            self._broker_failures, delay_ms, exc,
        )  # fmt: skip

    def _broker_recovered(self) -> None:
        if self._broker_failures:
            log.warning("Celery broker available again after %d failures", self._broker_failures)
        self._broker_failures = 0
        self._broker_retry_at = None

    def _reconcile_pauses(self) -> None:
        assert self._consumer is not None
        if self._broker_retry_at is not None and time.monotonic() >= self._broker_retry_at:
            self._broker_retry_at = None  # let the next batch try the broker again
        self._check_queue_depths()
        self._check_holds()
        self._check_breakers()
        with self._lock:
            assigned = set(self._assigned)
            held = {tp: full.kind for tp, full in self._holds.held.items()}
        self._paused = pause_reasons(
            assigned,
            broker_down=self._broker_retry_at is not None,
            held_topics=self._backpressure.held,
            held_partitions=held,
            flooded_topics=self._breakers.paused_topics(),
        )
        wanted = set(self._paused)
        paused = set(self._consumer.paused())
        if wanted - paused:
            self._consumer.pause(*(wanted - paused))
        if paused - wanted:
            self._consumer.resume(*(paused - wanted))

    def _check_queue_depths(self) -> None:
        queues = self._backpressure.queues
        if not queues or self._broker_retry_at is not None:
            return
        try:
            depths = self._dispatcher.queue_depths(queues)
        except PublishError as exc:
            self._broker_failed(exc)
            return
        if self._in_flight is not None:  # may not be in Redis yet: count it as if it were
            for queue, count in self._in_flight.batch.queued().items():
                depths[queue] = depths.get(queue, 0) + count
        held, released = self._backpressure.update(depths)
        for topic in held:
            log.warning("backpressure: %s paused, its queue holds %s", topic, depths)
        for topic in released:
            log.info("backpressure: %s resumed, its queue holds %s", topic, depths)

    def _check_breakers(self) -> None:
        if self._broker_retry_at is not None:
            return
        try:
            self._breakers.check(time.time())
        except redis.RedisError as exc:  # the broker's outage handling takes over
            self._broker_failed(exc)

    def _check_holds(self) -> None:
        with self._lock:
            held = self._holds.held
        if not held or self._broker_retry_at is not None:
            return
        watched = {full.watch: full.kind for full in held.values()}
        try:
            counts = self._key_queues.sizes(watched)
        except redis.RedisError as exc:  # the broker's outage handling takes over
            self._broker_failed(exc)
            return
        with self._lock:
            released = self._holds.update(counts)
        for tp in released:
            what = (
                "its watermark is gone"
                if held[tp].kind == "watermark"
                else "waiting records drained"
            )
            log.info("%s[%d]: %s, partition resumed", tp.topic, tp.partition, what,
                     extra=at(topic=tp.topic, partition=tp.partition))  # fmt: skip

    # -- what hooks see ----------------------------------------------------------------------

    def _observe_poll(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        if batch:
            self.hooks.after_poll({Partition(*tp): len(records) for tp, records in batch.items()})

    def _report_state(self) -> None:
        now = time.monotonic()
        if now < self._state_due:
            return
        self._state_due = now + _STATE_INTERVAL_S
        self.hooks.after_state(self.state())

    def state(self) -> LoopState:
        """A snapshot of this bridge: its partitions, their offsets, lag and pauses (loop
        thread only: it asks the consumer for each partition's end offset)."""
        assert self._consumer is not None
        with self._lock:
            assigned = sorted(self._assigned)
            offsets = {tp: self._offsets_of(tp) for tp in assigned}
        highwater, paused = self._consumer.highwater, self._paused
        partitions = tuple(
            PartitionState(tp.topic, tp.partition, *offsets[tp], highwater(tp), paused.get(tp))
            for tp in assigned
        )
        return LoopState(
            member=self.member,
            group_id=self.group_id,
            at_ms=int(time.time() * 1000),
            broker_down=self._broker_retry_at is not None,
            partitions=partitions,
            breakers=self._breakers.reports(),
        )

    def _offsets_of(self, tp: TopicPartition) -> tuple[int | None, int | None]:
        partition = Partition(*tp)
        return self.offsets.position(partition), self.offsets.last_committed(partition)

    # -- commits ---------------------------------------------------------------------------

    def _commit_async(self) -> None:
        """Commit what was accepted without waiting for Kafka; one commit at a time (the next
        takes whatever was accepted meanwhile). Its callback runs on this thread, in poll."""
        assert self._consumer is not None
        if self._commit_future is not None and not self._commit_future.is_done:
            return
        pending = self._pending_commits()
        if pending:
            done = functools.partial(self._committed, pending, time.perf_counter())
            self._commit_future = self._consumer.commit_async(
                _commit_request(pending), callback=done
            )

    def _committed(
        self, pending: Mapping[Partition, int], started: float, _offsets: Any, response: Any
    ) -> None:
        if isinstance(response, Exception):
            self._commit_failed(response)
        else:
            self._commit_succeeded(pending, time.perf_counter() - started)

    def _commit(self, timeout_ms: int | None = None) -> None:
        """Commit what was accepted and wait for Kafka's answer (on stopping)."""
        assert self._consumer is not None
        pending = self._pending_commits()
        if not pending:
            return
        started = time.perf_counter()
        try:
            self._consumer.commit(_commit_request(pending), timeout_ms=timeout_ms)
        except KafkaError as exc:
            self._commit_failed(exc)
            return
        self._commit_succeeded(pending, time.perf_counter() - started)

    def _pending_commits(self) -> dict[Partition, int]:
        with self._lock:
            return {
                tp: offset
                for tp, offset in self.offsets.to_commit().items()
                if TopicPartition(*tp) in self._assigned
            }

    def _commit_failed(self, exc: Exception) -> None:
        if not self._commit_failing:
            log.error("commit to Kafka failed, retrying after each poll: %r", exc)
        self._commit_failing = True
        self.hooks.after_commit_failed(exc)

    def _commit_succeeded(self, pending: Mapping[Partition, int], seconds: float) -> None:
        self.hooks.after_commit(pending, seconds)
        if self._commit_failing:
            log.warning("commits to Kafka succeed again")
        self._commit_failing = False
        with self._lock:
            self.offsets.committed(pending)

    # -- setup and teardown ----------------------------------------------------------------

    def _ensure_dead_letter_topics(self) -> None:
        """Create the DLT of a routed topic created after the start, once it is assigned here
        (before its first record is dispatched); after a failure, try again in 5 s."""
        if self._dead_letter_topics.complete:  # the usual case, on every loop iteration
            return
        with self._lock:
            missing = self._dead_letter_topics.missing({tp.topic for tp in self._assigned})
        if not missing or time.monotonic() < self._topics_retry_at:
            return
        try:
            self._dead_letter_topics.ensure(missing)
        except KafkaError as exc:
            self._topics_retry_at = time.monotonic() + _TOPICS_RETRY_S
            log.warning("dead-letter topics of %s not created yet, trying again in %d s: %r",
                        ", ".join(sorted(missing)), _TOPICS_RETRY_S, exc)  # fmt: skip

    def _make_consumer(self) -> KafkaConsumer:
        k = self.settings.kafka
        consumer = KafkaConsumer(
            bootstrap_servers=k.bootstrap_servers.split(","),
            bootstrap_timeout_ms=_START_BOOTSTRAP_MS,
            group_id=k.group_id,
            group_instance_id=k.group_instance_id,
            client_id=k.client_id,
            enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset,
            max_poll_records=k.max_poll_records,
            session_timeout_ms=k.session_timeout_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            request_timeout_ms=k.request_timeout_ms,
            **security_configs(k),
        )
        await_pending_joins(consumer)
        return consumer

    def _await_topic_metadata(self, consumer: KafkaConsumer) -> None:
        # Like librdkafka, join the group only once the routed topics' partitions are known:
        # kafka-python 3.0 may otherwise lead a first assignment with no partitions and then
        # miss the metadata change that should trigger a rebalance.
        for topic in self.router.topics:
            if not consumer.partitions_for_topic(topic):
                log.warning("topic %s does not exist (yet): nothing to consume from it", topic)

    def _shutdown(self) -> None:
        timeout_ms = self.settings.kafka.shutdown_timeout_ms
        self._duties.stop(timeout_s=timeout_ms / 1000)
        if self._consumer is not None:
            self._settle(None)  # the batch in flight: accept it, so that it is committed
            self._commit(timeout_ms=timeout_ms)
            self._consumer.close(autocommit=False, timeout_ms=timeout_ms)
            self._consumer = None
        self._publisher.close()
        self._dead_letter_producer.close(timeout_s=timeout_ms / 1000)
        self._dispatcher.close()
        self.hooks.on_stop()
        log.info("bridge stopped: group %s", self.group_id)


_POLL_RETRY_S = 0.5  # after a poll that failed because the broker is unreachable
_START_BOOTSTRAP_MS = 5_000  # one start-up attempt's wait for a broker (a stop waits for it)
_TOPICS_RETRY_S = 5
_STATE_INTERVAL_S = 1.0


def _limits(routes: Iterable[Route]) -> dict[str, Limit]:
    return {
        r.topic: Limit(r.queue, r.max_queue_depth, r.resume_queue_depth or 0)
        for r in routes
        if r.max_queue_depth is not None
    }


def _commit_request(offsets: Mapping[Partition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {
        TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }


def _to_record(msg: Any, route: Route) -> Record:
    return Record(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=msg.timestamp,
        key=msg.key,
        raw_value=msg.value,
        headers=tuple(msg.headers or ()),
        value_format=route.value_format,
        timestamp_type=TimestampType.of(msg.timestamp_type),
    )


def _names(partitions: Iterable[Any]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
