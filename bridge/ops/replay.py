"""Redriving dead letters (Kafka and Redis I/O): ``python -m bridge replay``.

A DLT is read with a consumer group of its own (default ``{group_id}.replay``) from its
committed offsets up to the end offsets taken at start, so a run always ends. Each poll batch
is decided by :func:`bridge.ops.replay_plan.plan`, the chosen records are written (``--to source``:
an idempotent ``acks=all`` producer, waiting for every write) or enqueued (``--to task``:
through :mod:`bridge.backends.redis.dispatch`), and only then are the batch's offsets committed,
explicitly.
A stopped run (SIGINT/SIGTERM) finishes and commits the batch in hand; a rerun goes on from
there.

``--to task`` enqueues each DLT record through the dispatcher's exactly-once script, with the
DLT partition's offset as its watermark
(``bridge:{group_id}:replay:{replay group}:published:{dlt}:{partition}``),
so a record enqueued just before a crash, and not yet committed, is not enqueued again.
``--to source`` is at-least-once across such a crash (the record is written twice; each copy
is a new record with its own task id).

Parked dead letters (in Redis) are redriven one by one and removed once redriven: with
``--to task`` in one atomic step with their enqueue, with ``--to source`` after the write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from bridge import keys
from bridge.backends.kafka.auth import security_configs
from bridge.backends.kafka.send import close_producer, sendable
from bridge.backends.kafka.topics import admin_client, partition_counts
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message
from bridge.deadletter import dead_letter_headers, from_dict
from bridge.errors import BridgeError, ReplayError, ReplayStoppedError
from bridge.ops.replay_headers import DeadView
from bridge.ops.replay_plan import (
    Decision,
    ReplayRequest,
    Summary,
    Verdict,
    describe,
    plan,
    replay_task_id,
    task_route,
)
from bridge.record import Envelope, Record
from bridge.routing import Route, Router
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

_MAX_POLL_RECORDS = 200
_POLL_TIMEOUT_MS = 500


class Progress(Protocol):
    """Progress hook: ``started`` once with the number of dead letters to read, then
    ``advanced`` by each batch read."""

    def started(self, total: int) -> None: ...

    def advanced(self, count: int) -> None: ...


class NoProgress:
    """The silent :class:`Progress`."""

    def started(self, total: int) -> None:
        pass

    def advanced(self, count: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter to replay: its view, value, and place in its DLT (none: parked)."""

    view: DeadView
    value: bytes | None
    dlt_topic: str = ""
    dlt_partition: int = -1
    dlt_offset: int = -1

    def __str__(self) -> str:
        if not self.dlt_topic:
            return f"parked dead letter {self.view.text('bridge-task-id')}"
        return f"dead letter {self.dlt_topic}[{self.dlt_partition}]@{self.dlt_offset}"


class Replayer:
    """One ``replay`` run; :meth:`stop` (from a signal handler) ends it after the batch in
    hand is written and committed."""

    def __init__(
        self, settings: BridgeSettings, request: ReplayRequest, progress: Progress | None = None
    ) -> None:
        self._settings = settings
        self._request = request
        self._router = Router.from_settings(settings)
        self._group_id = settings.kafka.group_id
        self._replay_group = request.replay_group or f"{self._group_id}.replay"
        self._progress = progress or NoProgress()
        self._running = True
        self.summary = Summary(dry_run=request.dry_run)

    def stop(self) -> None:
        """Stop after the batch in hand."""
        self._running = False

    def run(self) -> Summary:
        """Replay what the request selects.

        :raises ReplayError: the DLT does not exist.
        :raises ReplayStoppedError: a write or enqueue failed (the batch in hand is not
            committed).
        :raises PublishError: the Celery broker was unreachable (``--to task``).
        """
        try:
            if self._request.parked:
                self._replay_parked()
            else:
                self._replay_dlt()
        except (KafkaError, redis.RedisError) as exc:
            raise ReplayStoppedError(
                f"replay stopped, the batch in hand not committed: {exc!r}"
            ) from exc
        return self.summary

    # -- decisions -----------------------------------------------------------------------

    def _decide(self, view: DeadView) -> tuple[Decision, Route | None]:
        decision = plan(view, self._request.filter, self._request.max_replays)
        if decision.verdict is not Verdict.REPLAY or self._request.to != "task":
            return decision, None
        assert decision.origin is not None
        route = task_route(self._router, decision.origin)
        if route is None:
            why = f"{decision.origin.topic}: no unordered route for --to task"
            return Decision(Verdict.UNREPLAYABLE, decision.origin, why=why), None
        return decision, route

    def _take(self, target: Target, letter: Letter) -> bool:
        """Decide one dead letter and hand it to ``target`` if chosen; True if it was."""
        decision, route = self._decide(letter.view)
        self.summary.count(decision)
        if decision.verdict is Verdict.REPLAY:
            target.add(letter, decision, route)
            return True
        if decision.verdict is not Verdict.FILTERED:
            log.warning("%s not replayed: %s", letter, decision.why)
        return False

    def _target(self) -> Target:
        if self._request.dry_run:
            return Listing(self.summary)
        if self._request.to == "task":
            return TaskTarget(self._settings, self._replay_group)
        return SourceTarget(self._settings)

    # -- a DLT ---------------------------------------------------------------------------

    def _replay_dlt(self) -> None:
        dlt = self._request.dlt_topic
        assert dlt is not None
        count = _partitions(self._settings, dlt)
        consumer = KafkaConsumer(
            bootstrap_servers=self._settings.kafka.bootstrap_servers.split(","),
            group_id=self._replay_group,
            client_id=f"{self._settings.kafka.client_id}-replay",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=_MAX_POLL_RECORDS,
            request_timeout_ms=self._settings.kafka.request_timeout_ms,
            **security_configs(self._settings.kafka),
        )
        target = self._target()
        try:
            ends = self._start(consumer, target, [TopicPartition(dlt, p) for p in range(count)])
            self._drain(consumer, target, ends)
        finally:
            target.close()
            consumer.close()

    def _start(
        self, consumer: KafkaConsumer, target: Target, tps: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Seek each partition to where this run starts; return the end of those with work."""
        consumer.assign(tps)
        firsts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        if self._request.from_beginning:
            target.forget(tps)
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            committed = None if self._request.from_beginning else consumer.committed(tp)
            starts[tp] = max(firsts[tp], committed or 0)
        todo = {tp: ends[tp] for tp in tps if starts[tp] < ends[tp]}
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp])
        log.info("replaying %s: from %s to %s", self._request.dlt_topic,
                 [starts[tp] for tp in tps], [ends[tp] for tp in tps])  # fmt: skip
        self._progress.started(sum(ends[tp] - starts[tp] for tp in todo))
        return todo

    def _drain(
        self, consumer: KafkaConsumer, target: Target, ends: dict[TopicPartition, int]
    ) -> None:
        while ends and self._running:
            read = 0
            done: dict[TopicPartition, int] = {}
            for tp, records in consumer.poll(timeout_ms=_POLL_TIMEOUT_MS).items():
                mine = [r for r in records if tp in ends and r.offset < ends[tp]]
                for r in mine:
                    self._take(target, _letter(r))
                if mine:
                    done[tp], read = mine[-1].offset + 1, read + len(mine)
            self._flushed(target.flush())
            if done and not self._request.dry_run:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in done.items()})
            self._progress.advanced(read)
            for tp in [tp for tp in ends if consumer.position(tp) >= ends[tp]]:
                del ends[tp]
                consumer.pause(tp)

    def _flushed(self, outcome: tuple[int, int]) -> None:
        replayed, already = outcome
        self.summary.replayed += replayed
        self.summary.already_replayed += already

    # -- parked dead letters ---------------------------------------------------------------

    def _replay_parked(self) -> None:
        client = redis.Redis.from_url(self._settings.celery.broker_url, socket_timeout=5)
        store = DeadLetterStore(client, self._group_id)
        target = self._target()
        try:
            parked = [p for p in store.parked() if self._selected(p)]
            self._progress.started(len(parked))
            for data in parked:
                if not self._running:
                    break
                self._redrive(store, target, data)
                self._progress.advanced(1)
        finally:
            target.close()
            client.close()

    def _selected(self, data: dict[str, Any]) -> bool:
        dlt = self._request.dlt_topic
        envelope = data.get("envelope")
        return dlt is None or (isinstance(envelope, dict) and envelope.get("dlt_topic") == dlt)

    def _redrive(self, store: DeadLetterStore, target: Target, data: dict[str, Any]) -> None:
        try:
            dl = from_dict(data)
        except (BridgeError, KeyError, TypeError, ValueError) as exc:
            self.summary.unreplayable += 1
            log.error("parked dead letter %s unreadable, left parked: %r", data.get("task_id"), exc)
            return
        view = DeadView(tuple(dead_letter_headers(dl)), dl.record.key)
        if self._take(target, Letter(view, dl.record.raw_value)) and target.unpark(
            store, dl.task_id
        ):
            self.summary.parked_redriven += 1
            done = "would be redriven" if self._request.dry_run else "redriven"
            log.info("parked dead letter of %r %s (task %s)", dl.record, done, dl.task_id)


def _partitions(settings: BridgeSettings, dlt: str) -> int:
    """The partition count of ``dlt``.

    :raises ReplayError: it does not exist.
    """
    admin = admin_client(settings.kafka)
    try:
        counts = partition_counts(admin, [dlt])
    finally:
        admin.close()
    if dlt not in counts:
        raise ReplayError(f"--topic/--dlt-topic: the dead-letter topic {dlt!r} does not exist")
    return counts[dlt]


def _letter(record: Any) -> Letter:
    view = DeadView(tuple(record.headers or ()), record.key, int(record.timestamp))
    return Letter(view, record.value, record.topic, record.partition, record.offset)


class Target(Protocol):
    """Where chosen dead letters go, batch by batch."""

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        """Take one dead letter to replay (sent by :meth:`flush` at the latest)."""

    def flush(self) -> tuple[int, int]:
        """Finish the batch: ``(replayed, already replayed before)``."""

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        """Finish the one parked dead letter added, and forget it; False if it was gone."""

    def forget(self, tps: list[TopicPartition]) -> None:
        """``--from-beginning``: forget what was enqueued from these DLT partitions."""

    def close(self) -> None:
        """Release connections."""


class Listing:
    """``--dry-run``: lists what would be replayed, changes nothing."""

    def __init__(self, summary: Summary) -> None:
        self._summary = summary
        self._added = 0

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        self._summary.listed.append(describe(letter.view, decision))
        self._added += 1

    def flush(self) -> tuple[int, int]:
        added, self._added = self._added, 0
        return added, 0

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        self._added = 0
        return True

    def forget(self, tps: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        pass


class SourceTarget:
    """``--to source``: write each record back to its original topic (and partition, if it
    still exists), with an idempotent ``acks=all`` producer."""

    def __init__(self, settings: BridgeSettings) -> None:
        timeout_ms = settings.dead_letter.delivery_timeout_ms
        self._timeout_s = timeout_ms / 1000 + 5
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
            client_id=f"{settings.kafka.client_id}-replay",
            acks="all",
            enable_idempotence=True,
            delivery_timeout_ms=timeout_ms,
            max_block_ms=timeout_ms,
            request_timeout_ms=min(settings.kafka.request_timeout_ms, timeout_ms),
            **security_configs(settings.kafka),
        )
        self._futures: list[Any] = []

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        origin = decision.origin
        assert origin is not None
        known = self._producer.partitions_for(origin.topic) or set()
        self._futures.append(
            self._producer.send(
                origin.topic,
                key=letter.view.key,
                value=letter.value,
                headers=sendable(decision.headers),
                partition=origin.partition if origin.partition in known else None,
            )
        )
        log.debug("replaying %s (%s[%d]@%d) to %s, replay %d", letter, origin.topic,
                  origin.partition, origin.offset, origin.topic, decision.replays)  # fmt: skip

    def flush(self) -> tuple[int, int]:
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=self._timeout_s)
        return len(futures), 0

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        self.flush()
        return store.unpark(task_id)

    def forget(self, tps: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        close_producer(self._producer, timeout_s=5)


class TaskTarget:
    """``--to task``: enqueue each record into its route's Celery task, with a fresh retry
    budget and the task id ``{original task id}:replay:{n}``."""

    def __init__(self, settings: BridgeSettings, replay_group: str) -> None:
        self._group_id = settings.kafka.group_id
        # Its watermarks are the replay group's, per DLT partition (never a source topic's).
        self._namespace = keys.replay_namespace(self._group_id, replay_group)
        self._dispatcher = Dispatcher(settings.celery, self._namespace)
        self._messages: list[Message] = []

    def add(self, letter: Letter, decision: Decision, route: Route | None) -> None:
        origin = decision.origin
        assert origin is not None
        assert route is not None
        record = Record(
            topic=origin.topic, partition=origin.partition, offset=origin.offset,
            timestamp_ms=origin.timestamp_ms, key=letter.view.key, raw_value=letter.value,
            headers=decision.headers, value_format=route.value_format,
            timestamp_type=origin.timestamp_type,
        )  # fmt: skip
        envelope = Envelope(
            record,
            self._group_id,
            route.dlt_topic,
            retry_policy=route.retry_policy,
            breaker_window_s=route.breaker_window_s,
        )
        task_id = replay_task_id(self._group_id, origin, decision.replays)
        message = self._dispatcher.message(route.task, route.queue, envelope, task_id=task_id)
        dlt, partition, offset = letter.dlt_topic, letter.dlt_partition, letter.dlt_offset
        self._messages.append(message._replace(topic=dlt, partition=partition, offset=offset))
        log.debug("replaying %s (%r) into %s as task %s", letter, record, route.task, task_id)

    def flush(self) -> tuple[int, int]:
        messages, self._messages = self._messages, []
        outcome = self._dispatcher.publish(messages)
        return outcome.enqueued, outcome.skipped

    def unpark(self, store: DeadLetterStore, task_id: str) -> bool:
        [message], self._messages = self._messages, []
        assert message.queue is not None
        assert message.payload is not None
        return store.unpark(task_id, (message.queue, message.payload))

    def forget(self, tps: list[TopicPartition]) -> None:
        names = [keys.published_watermark(self._namespace, tp.topic, tp.partition) for tp in tps]
        if names:
            self._dispatcher.client.delete(*names)

    def close(self) -> None:
        self._dispatcher.close()
