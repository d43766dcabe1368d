"""What the bridge's consumer group has committed, how far behind it is, and what waits.

Two readers of I/O (:func:`kafka_view`: offsets and dead-letter topics; :func:`redis_view`:
what running bridges report, queue depths, delayed retries, dead letters not in Kafka, ordered
keys) and one pure function that joins them into the stable JSON document of
``python -m bridge status --json`` (:func:`status_doc`, format 1). Works whether or not a bridge
runs: without one, partitions have no owner and nothing is reported paused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bridge.backends.kafka.auth import security_configs
from bridge.backends.kafka.topics import admin_client
from bridge.backends.redis import route_pauses
from bridge.backends.redis.client import broker_client, connected_replicas, primary_address
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.ordering import KeyQueues, KeyState
from bridge.backends.redis.replicas import startup_warning
from bridge.backends.redis.retries import RetrySummary, Scheduler
from bridge.backends.redis.waiting import RedisCounts, read_counts
from bridge.backends.redis.worker_registry import (
    Registration,
    coverage,
    read_registrations,
    task_problem,
)
from bridge.breaker import level as breaker_level
from bridge.consumer.members import read_members
from bridge.consumer.queue_consumers import no_consumer_warning, read_consumers
from bridge.credentials import mask_url
from bridge.deadletter import iso_ms
from bridge.hooks import LoopState, PartitionState
from bridge.routing import Route, Router
from bridge.settings import BridgeSettings
from bridge.worker.unroutable import UnroutableCount
from bridge.worker.unroutable import read_counts as read_unroutable

FORMAT = 1


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One routed partition: committed offset (None before the first commit), end, lag."""

    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        """Records not yet committed by the group."""
        return self.end - (self.committed or 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, lag included."""
        return {**asdict(self), "lag": self.lag}


@dataclass(frozen=True, slots=True)
class KafkaView:
    """The group's committed offsets, end offsets, and how many records each DLT holds
    (``None``: the DLT does not exist)."""

    partitions: list[PartitionStatus]
    dlt_records: dict[str, int | None]


def kafka_view(settings: BridgeSettings) -> KafkaView:
    """Read committed and end offsets of every routed partition and the size of every DLT.

    :raises kafka.errors.KafkaError: Kafka is unreachable.
    """
    router = Router.from_settings(settings)
    k = settings.kafka
    admin = admin_client(k)
    consumer = KafkaConsumer(
        bootstrap_servers=k.bootstrap_servers.split(","),
        client_id=f"{k.client_id}-status",
        enable_auto_commit=False,
        request_timeout_ms=k.request_timeout_ms,
        **security_configs(k),
    )
    try:
        committed = admin.list_group_offsets(k.group_id).get(k.group_id, {})
        tps = _partitions(consumer, router.topics)
        dlts = _partitions(consumer, [r.dlt_topic for r in router.routes])
        ends = consumer.end_offsets(tps + dlts) if tps or dlts else {}
        starts = consumer.beginning_offsets(dlts) if dlts else {}
    finally:
        consumer.close()
        admin.close()
    records: dict[str, int | None] = {r.dlt_topic: None for r in router.routes}
    for tp in dlts:
        records[tp.topic] = (records[tp.topic] or 0) + int(ends[tp]) - int(starts[tp])
    rows = [
        PartitionStatus(tp.topic, tp.partition, _offset(committed.get(tp)), int(ends[tp]))
        for tp in tps
    ]
    return KafkaView(rows, records)


def partition_status(settings: BridgeSettings) -> list[PartitionStatus]:
    """Committed and end offsets of every partition of every routed topic that exists."""
    return kafka_view(settings).partitions


@dataclass(frozen=True, slots=True)
class RedisView:
    """Everything ``status`` reads from Redis, as of ``now_ms``."""

    now_ms: int
    members: list[LoopState]
    queue_depths: dict[str, int]
    counts: RedisCounts
    retries: RetrySummary
    dead_letters_next_attempt_ms: int | None
    dead_letters_parked_sample: list[dict[str, Any]]
    keys_waiting: list[KeyState] = field(default_factory=list)
    keys_parked: list[KeyState] = field(default_factory=list)
    unroutable: dict[str, UnroutableCount] = field(default_factory=dict)
    workers: list[Registration] = field(default_factory=list)
    #: queue -> worker channels on the bridge's transport that consume it (a live heartbeat)
    consumers: dict[str, int] = field(default_factory=dict)
    #: the primary the Sentinels named (``host:port``); ``None`` for one Redis server
    primary: str | None = None
    #: replicas connected to the primary (``INFO replication``), and how many
    #: ``celery.min_replicas_to_accept`` requires
    replicas: int = 0
    replicas_required: int = 0
    #: routes an operator paused: topic -> who, when, why
    paused_routes: dict[str, dict[str, Any]] = field(default_factory=dict)


def redis_view(settings: BridgeSettings) -> RedisView:
    """Read what the group keeps in Redis, and the depth of every route's Celery queue.

    :raises redis.RedisError: Redis is unreachable.
    """
    client = broker_client(settings.celery, socket_connect_timeout=5, socket_timeout=5)
    group_id = settings.kafka.group_id
    now_ms = int(time.time() * 1000)
    queues = sorted({route.queue for route in settings.routes})
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            depths = dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))
        store, keys = DeadLetterStore(client, group_id), KeyQueues(client, group_id)
        return RedisView(
            now_ms=now_ms,
            members=read_members(client, group_id),
            queue_depths=depths,
            counts=read_counts(client, group_id),
            retries=Scheduler(client, group_id).summary(now_ms),
            dead_letters_next_attempt_ms=store.next_attempt_ms(),
            dead_letters_parked_sample=store.some_parked(),
            keys_waiting=keys.waiting_keys(now_ms),
            keys_parked=keys.parked_keys(now_ms),
            unroutable=read_unroutable(client, group_id),
            workers=read_registrations(client),
            consumers=read_consumers(client, queues, settings.celery.processing_lease_s),
            primary=primary_address(client),
            replicas=connected_replicas(client),
            replicas_required=settings.celery.min_replicas_to_accept,
            paused_routes=route_pauses.paused(client, group_id),
        )
    finally:
        client.close()


def status_doc(
    group_id: str,
    routes: Iterable[Route],
    kafka: KafkaView | None,
    held: RedisView | None,
    errors: Iterable[str] = (),
) -> dict[str, Any]:
    """The ``status --json`` document (format 1). ``kafka`` or ``held`` is ``None`` when
    Kafka or Redis could not be read; ``errors`` then says why."""
    now_ms = held.now_ms if held is not None else int(time.time() * 1000)
    owners = _owners(held.members if held is not None else ())
    routes = list(routes)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "group_id": group_id,
        "at": iso_ms(now_ms),
        "redis_primary": None if held is None else held.primary,
        "redis_replicas": None if held is None else _replicas(held),
        "bridges": [_bridge(m) for m in (held.members if held is not None else ())],
        "routes": [_route(r, kafka, held, owners) for r in routes],
        "retries": None if held is None else _retries(held, now_ms),
        "dead_letters": None if held is None else _dead_letters(held),
        "ordered": None if held is None else _ordered(held, now_ms),
        "warnings": [] if held is None else _warnings(routes, held),
        "errors": list(errors),
    }
    return doc


def collect(settings: BridgeSettings) -> dict[str, Any]:
    """Read Kafka and Redis and return the status document; what could not be read is
    ``None`` in it, and ``errors`` says why (a secret in a URL masked)."""
    errors: list[str] = []
    kafka: KafkaView | None = None
    held: RedisView | None = None
    try:
        kafka = kafka_view(settings)
    except KafkaError as exc:
        errors.append(f"Kafka unreachable: {exc!r}")
    try:
        held = redis_view(settings)
    except redis.RedisError as exc:
        errors.append(f"Redis unreachable at {mask_url(settings.celery.broker_url)}: {exc!r}")
    routes = Router.from_settings(settings).routes
    return status_doc(settings.kafka.group_id, routes, kafka, held, errors)


def _route(
    route: Route,
    kafka: KafkaView | None,
    held: RedisView | None,
    owners: Mapping[tuple[str, int], tuple[str, PartitionState]],
) -> dict[str, Any]:
    rows = [p for p in (kafka.partitions if kafka else ()) if p.topic == route.topic]
    partitions = [_partition(p, owners.get((p.topic, p.partition))) for p in rows]
    return {
        "topic": route.topic,
        "task": route.task,
        "queue": route.queue,
        "ordered": route.ordered,
        "dlt_topic": route.dlt_topic,
        "queue_depth": None if held is None else held.queue_depths.get(route.queue),
        "consumers": None if held is None else held.consumers.get(route.queue),
        "dlt_records": None if kafka is None else kafka.dlt_records.get(route.dlt_topic),
        "lag": None if kafka is None else sum(p.lag for p in rows),
        "breaker": _breaker(route.topic, held.members if held is not None else ()),
        "paused_by_operator": None if held is None else held.paused_routes.get(route.topic),
        "partitions": partitions,
        **_routability(route, held),
    }


def _routability(route: Route, held: RedisView | None) -> dict[str, Any]:
    """Whether live workers run the route's task (``workers``; ``problem`` says what is wrong)
    and how many of its records no worker could (``unroutable``); ``None``: Redis unread."""
    if held is None:
        return {"workers": None, "unroutable": None}
    cover = coverage(route.task, route.queue, held.workers)
    count = held.unroutable.get(route.topic, UnroutableCount(0, None))
    problem = task_problem(route.task, route.queue, cover)
    return {"workers": {**cover.to_dict(), "problem": problem}, "unroutable": count.to_dict()}


def _replicas(held: RedisView) -> dict[str, int]:
    return {"connected": held.replicas, "required": held.replicas_required}


def _warnings(routes: Iterable[Route], held: RedisView) -> list[str]:
    """One line per routed queue that no worker on the bridge's transport consumes, one per
    route an operator paused, and one when the primary has fewer replicas than
    ``celery.min_replicas_to_accept``."""
    topics: dict[str, list[str]] = {}
    for route in routes:
        topics.setdefault(route.queue, []).append(route.topic)
    lines = [
        no_consumer_warning(queue, names, held.queue_depths.get(queue))
        for queue, names in sorted(topics.items())
        if held.consumers.get(queue) == 0
    ]
    lines += [
        f"route {topic} paused by {who.get('by', '?')} at {who.get('at', '?')} "
        f"({who.get('why') or 'no reason given'}): resume with `python -m bridge resume "
        f"--topic {topic}`"
        for topic, who in sorted(held.paused_routes.items())
        if topic in {r.topic for r in routes}
    ]
    short = startup_warning(held.replicas_required, held.replicas)
    return lines if short is None else [*lines, short]


def _breaker(topic: str, members: Iterable[LoopState]) -> dict[str, Any] | None:
    """The route's flood breaker as its bridges report it (the worst state among them), or
    ``None`` when no bridge reports one (no bridge runs, or the breaker is off)."""
    reports = [b for m in members for b in m.breakers if b.topic == topic]
    if not reports:
        return None
    worst = max(reports, key=lambda b: (breaker_level(b.state), b.since_ms or 0))
    return {
        "state": worst.state,
        "since": None if worst.since_ms is None else iso_ms(worst.since_ms),
        "trips": max(b.trips for b in reports),
        "handled": worst.handled,
        "dead_lettered": worst.dead_lettered,
        "dead_letter_ratio": worst.ratio,
    }


def _partition(row: PartitionStatus, owned: tuple[str, PartitionState] | None) -> dict[str, Any]:
    data = {k: v for k, v in row.to_dict().items() if k != "topic"}
    member, state = owned if owned is not None else (None, None)
    data["owner"] = member
    data["paused"] = state.paused if state is not None else None
    data["uncommitted"] = state.uncommitted if state is not None else None
    return data


def _owners(members: Iterable[LoopState]) -> dict[tuple[str, int], tuple[str, PartitionState]]:
    return {(p.topic, p.partition): (m.member, p) for m in members for p in m.partitions}


def _bridge(member: LoopState) -> dict[str, Any]:
    return {
        "member": member.member,
        "reported_at": iso_ms(member.at_ms),
        "broker_down": member.broker_down,
        "partitions": [f"{p.topic}[{p.partition}]" for p in member.partitions],
    }


def _retries(held: RedisView, now_ms: int) -> dict[str, Any]:
    summary = held.retries
    next_ms = summary.next_due_ms
    return {
        "waiting": held.counts.delayed_retries,
        "next_due_at": None if next_ms is None else iso_ms(next_ms),
        "next_due_in_s": None if next_ms is None else round((next_ms - now_ms) / 1000, 3),
        "last_due_at": None if summary.last_due_ms is None else iso_ms(summary.last_due_ms),
        "overdue": summary.overdue,
    }


def _dead_letters(held: RedisView) -> dict[str, Any]:
    next_ms = held.dead_letters_next_attempt_ms
    return {
        "pending": held.counts.dead_letters_pending,
        "pending_next_attempt_at": None if next_ms is None else iso_ms(next_ms),
        "parked": held.counts.dead_letters_parked,
        "parked_sample": [_parked_dead_letter(d) for d in held.dead_letters_parked_sample],
    }


def _parked_dead_letter(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "task_id": data.get("task_id"),
        "task": data.get("task"),
        "reason": data.get("reason"),
        "error": (data.get("error") or {}).get("fqcn"),
        "dead_lettered_at": data.get("dead_lettered_at"),
    }


def _ordered(held: RedisView, now_ms: int) -> dict[str, Any]:
    waiting = held.counts.records_waiting
    return {
        "records_waiting": {f"{topic}[{p}]": n for (topic, p), n in sorted(waiting.items())},
        "keys_out": held.counts.keys_out,
        "keys_waiting": [k.to_dict() for k in held.keys_waiting],
        "keys_parked": [_parked_key(k, now_ms) for k in held.keys_parked],
    }


def _parked_key(state: KeyState, now_ms: int) -> dict[str, Any]:
    data = state.to_dict()
    parked_at = (state.parked or {}).get("parked_at_ms")
    if parked_at is not None:
        data["parked_for_s"] = round((now_ms - int(parked_at)) / 1000, 3)
    return data


def _partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


def _offset(meta: Any) -> int | None:
    return None if meta is None or meta.offset < 0 else int(meta.offset)
