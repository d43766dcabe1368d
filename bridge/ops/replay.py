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

This module owns the run (:class:`Replayer`): reading, deciding, committing, unparking. Where
the chosen records go is :mod:`bridge.ops.replay_targets`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from bridge.backends.kafka.auth import security_configs
from bridge.backends.kafka.topics import admin_client, partition_counts
from bridge.backends.redis.client import broker_client
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.deadletter import dead_letter_headers, from_dict
from bridge.errors import BridgeError, ReplayError, ReplayStoppedError
from bridge.ops.replay_headers import DeadView
from bridge.ops.replay_plan import (
    DEFAULT_MAX_REPLAYS,
    Decision,
    ReplayFilter,
    ReplayRequest,
    Summary,
    Verdict,
    plan,
    task_route,
)
from bridge.ops.replay_targets import Letter, Listing, SourceTarget, Target, TaskTarget
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
        client = broker_client(self._settings.celery, socket_timeout=5)
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


def replay_letters(
    settings: BridgeSettings, letters: list[Letter], max_replays: int = DEFAULT_MAX_REPLAYS
) -> Summary:
    """Replay the given dead letters (the console's selection) to their source topics, as
    ``--to source`` does, with the loop guard; no replay group is read or committed.

    :raises kafka.errors.KafkaError: a write failed (those before it may have been written).
    """
    summary = Summary()
    target = SourceTarget(settings)
    try:
        for letter in letters:
            decision = plan(letter.view, ReplayFilter(), max_replays)
            summary.count(decision)
            if decision.verdict is Verdict.REPLAY:
                target.add(letter, decision, None)
            elif decision.verdict is not Verdict.FILTERED:
                log.warning("%s not replayed: %s", letter, decision.why)
        summary.replayed = target.flush()[0]
    finally:
        target.close()
    return summary


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
