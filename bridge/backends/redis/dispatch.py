"""Publishing records to Celery: the only module that sends task messages (Redis I/O).

Messages are built by Celery and kombu exactly as ``send_task`` builds them, so any Celery
worker and Flower read them: once per (task, queue), as a template
(:class:`bridge.backends.redis.messages.Template`) with markers where a record's task id,
``argsrepr``, argument and delivery tag go. Only the final ``LPUSH`` differs: a whole poll batch
goes to Redis in one Lua script (its keys and arguments: :mod:`bridge.backends.redis.enqueue`)
that also advances a per-partition *published watermark*
(:func:`bridge.keys.published_watermark`). A record below its partition's watermark was
already enqueued and is skipped, so a record is enqueued once however often it is consumed.
Each watermark belongs to one incarnation of its topic (:mod:`bridge.consumer.incarnations`).
This module owns the connections: the message-building Celery app, kombu's channel, the script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from bridge.backends.redis import ordering, replicas, scripts
from bridge.backends.redis.client import broker_client
from bridge.backends.redis.enqueue import Batched, EnqueueBatch, Message, Ordered, Straddle, recut
from bridge.backends.redis.messages import DeliveryTags, Template
from bridge.errors import PublishError
from bridge.hooks import Outcome
from bridge.record import (
    ArgWriter,
    Envelope,
    batch_repr,
    batch_task_id,
    message_origin,
    task_argsrepr,
    to_task_arg,
)
from bridge.record import task_id as record_task_id
from bridge.routing import Route
from bridge.settings import CelerySettings

# One poll batch in one script (bridge/backends/redis/lua/enqueue.lua documents its KEYS and ARGV).
_ENQUEUE = scripts.script("enqueue")
# Runs of the script after the first, for batches cut again at a watermark (one is enough
# unless another bridge of the group enqueues the same partition meanwhile).
_RECUTS = 3


def publisher_app(celery: CelerySettings) -> Celery:
    """A Celery app that only builds messages: JSON, no result backend, no sent events."""
    app = Celery("kafka-celery-bridge", broker=celery.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_send_sent_event=False,
        # Fail fast: the bridge backs off by itself and keeps polling Kafka meanwhile.
        broker_transport_options={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.2,
            "socket_connect_timeout": 5,
            "socket_timeout": 5,
            **celery.sentinel_options(),  # master_name, the Sentinels' password
        },
    )
    return app


class Dispatcher:
    """Turn envelopes into Celery task messages and enqueue them batch by batch."""

    def __init__(self, celery: CelerySettings, group_id: str) -> None:
        self._group_id = group_id
        self._ttl_s = celery.enqueue_dedup_ttl_s
        self._min_replicas = celery.min_replicas_to_accept
        self._value_shown = celery.argsrepr_value_bytes
        self._ack_timeout_ms = celery.replica_ack_timeout_ms
        self._app = publisher_app(celery)
        self._connection = self._app.connection_for_write()
        self._channel: Any = None
        self._templates: dict[tuple[str, str], Template] = {}
        self._writers: dict[str, ArgWriter] = {}  # by topic
        self._tags = DeliveryTags()
        self._origin = message_origin(group_id)
        # WAIT blocks its connection up to replica_ack_timeout_ms: the socket waits longer.
        socket_timeout = 5 + (self._ack_timeout_ms / 1000 if self._min_replicas else 0)
        self._redis = broker_client(celery, socket_timeout=socket_timeout, socket_connect_timeout=5)
        self._script = self._redis.register_script(_ENQUEUE)

    def message(
        self,
        task: str,
        queue: str,
        envelope: Envelope,
        ordered: Ordered | None = None,
        task_id: str | None = None,
    ) -> Message:
        """Build the task message of one record, addressed to ``task`` by name (for an ordered
        record: its key FIFO element).

        :param task_id: the Celery task id (default: the record's deterministic one).

        :raises PublishError: the broker could not be reached to build the first message of
            this task and queue.
        """
        template = self._template_for(task, queue)
        rec = envelope.record
        return self._filled(
            template, (rec.topic, rec.partition, rec.offset), task_id or envelope.task_id(),
            task_argsrepr(rec.topic, rec.partition, rec.offset, rec.key, rec.raw_value,
                          self._value_shown),
            json.dumps(to_task_arg(envelope)), ordered,
        )  # fmt: skip

    def consumed(self, route: Route, record: Any, ordered: Ordered | None = None) -> Message:
        """The task message of a record as kafka-python consumed it (``topic``, ``partition``,
        ``offset``, ``timestamp``, ``timestamp_type``, ``key``, ``value``, ``headers``) on
        ``route``: what :meth:`message` builds for its envelope, built for the poll loop's speed.

        :raises PublishError: see :meth:`message`.
        """
        template = self._template_for(route.task, route.queue)
        topic, partition, offset = record.topic, record.partition, record.offset
        return self._filled(
            template, (topic, partition, offset),
            record_task_id(self._group_id, topic, partition, offset),
            task_argsrepr(topic, partition, offset, record.key, record.value, self._value_shown),
            self._arg_json(route, record),
            ordered,
        )  # fmt: skip

    def batched(self, route: Route, records: Sequence[Any]) -> Message:
        """The task message of consecutive records of one partition (as kafka-python consumed
        them) on ``route``: its argument is the list of their envelopes, its task id
        :func:`~bridge.record.batch_task_id`; one record gets its plain message (:meth:`consumed`).

        :raises PublishError: see :meth:`message`.
        """
        if len(records) == 1:
            return self.consumed(route, records[0])
        template = self._template_for(route.task, route.queue)
        head, last = records[0], records[-1]
        topic, partition = head.topic, head.partition
        arg_json = "[" + ",".join(self._arg_json(route, r) for r in records) + "]"
        message = self._filled(
            template, (topic, partition, last.offset),
            batch_task_id(self._group_id, topic, partition, head.offset, last.offset),
            batch_repr(topic, partition, head.offset, last.offset, len(records)), arg_json, None,
        )  # fmt: skip

        def recut(mark: int) -> Message:
            return self.batched(route, [r for r in records if r.offset >= mark])

        return message._replace(batch=Batched(head.offset, len(records), recut))

    def _arg_json(self, route: Route, record: Any) -> str:
        return self._writer_for(route).json(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            record.headers,
            timestamp_type=record.timestamp_type,
        )

    def _filled(
        self,
        template: Template,
        where: tuple[str, int, int],
        task_id: str,
        argsrepr: str,
        arg_json: str,
        ordered: Ordered | None,
    ) -> Message:
        batch = None
        if ordered is not None and ordered.batch_size > 1:
            arg_json, cut = ordering.batch_piece(template.body_head, arg_json)
            batch = (ordered.batch_size, cut)
        payload = template.fill(
            task_id=task_id, argsrepr=argsrepr, arg_json=arg_json, delivery_tag=self._tags.next()
        )
        if ordered is not None:
            appended_ms = int(time.time() * 1000)
            payload = ordering.element(task_id, appended_ms, template.key, payload, batch)
        return Message(*where, template.key, payload, ordered)

    def _writer_for(self, route: Route) -> ArgWriter:
        writer = self._writers.get(route.topic)
        if writer is None:
            writer = self._writers[route.topic] = ArgWriter(
                group_id=self._group_id,
                dlt_topic=route.dlt_topic,
                value_format=route.value_format,
                retry_policy=route.retry_policy,
                on_exhausted=route.on_exhausted if route.ordered else None,
                breaker_window_s=route.breaker_window_s,
            )
        return writer

    def _template_for(self, task: str, queue: str) -> Template:
        template = self._templates.get((task, queue))
        if template is None:
            try:  # kombu's channel connects to Redis on first use
                template = self._templates[(task, queue)] = Template.build(
                    self._app, self._kombu_channel(), task, queue, self._origin
                )
            except (OperationalError, redis.RedisError, OSError) as exc:
                raise PublishError(f"no message template for {task} on {queue}: {exc!r}") from exc
        return template

    def publish(
        self,
        messages: Sequence[Message],
        head_deadline_ms: int = 0,
        topic_ids: Mapping[str, str | None] | None = None,
    ) -> Outcome:
        """Enqueue ``messages`` (in offset order per partition) atomically, skipping any
        record at or past which its partition was already enqueued. Ordered records are
        appended to their key's FIFO (published at once if the key was idle, with
        ``head_deadline_ms`` as its stall deadline); one refused for a full key or partition
        stops its partition's part of the batch there.

        :param topic_ids: each topic's id (:mod:`bridge.consumer.incarnations`): its partitions'
            watermarks are that incarnation's. A topic whose id is ``None`` (or missing) keeps
            an id-less watermark, and a record below it is refused (``watermark``), not
            skipped. ``None``: the watermarks are not tied to topic ids (replay's, of DLTs).
        :raises PublishError: Redis did not run the script (nothing or everything was done),
            or fewer than ``celery.min_replicas_to_accept`` replicas acknowledged it in time.
        """
        if not messages:
            return Outcome(0, 0)
        outcome, straddles = self._enqueue(messages, head_deadline_ms, topic_ids)
        for _ in range(_RECUTS):
            if not straddles:
                return outcome
            messages, skipped = recut(messages, straddles)
            more, straddles = self._enqueue(messages, head_deadline_ms, topic_ids)
            outcome = Outcome(
                outcome.enqueued + more.enqueued,
                outcome.skipped + skipped + more.skipped,
                outcome.appended + more.appended,
                outcome.refused + more.refused,
            )
        if straddles:
            raise PublishError(f"batches still straddle their watermarks: {straddles!r}")
        return outcome

    def _enqueue(
        self,
        messages: Sequence[Message],
        head_deadline_ms: int,
        topic_ids: Mapping[str, str | None] | None,
    ) -> tuple[Outcome, list[Straddle]]:
        """One run of the script: what it did, and the batches it left to cut again."""
        batch = EnqueueBatch(self._group_id, topic_ids)
        for m in messages:
            batch.add(m)
        keys, args = batch.keys(), batch.args(self._ttl_s, head_deadline_ms)
        try:
            if self._min_replicas:
                result = self._replicated(keys, args, len(messages))
            else:
                result = self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise PublishError(f"{len(messages)} task messages not enqueued: {exc!r}") from exc
        enqueued, skipped, appended, *refused = (int(v) for v in result)
        outcome = Outcome(enqueued, skipped, appended, batch.refusals(refused))
        return outcome, batch.straddles(refused)

    def _replicated(self, keys: list[str], args: list[Any], count: int) -> Any:
        """Run the script, then ``WAIT`` on the same connection (one non-transactional
        pipeline holds one connection: ``WAIT`` counts that connection's writes).

        :raises PublishError: too few replicas acknowledged it in time.
        """
        with self._redis.pipeline(transaction=False) as pipe:
            self._script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self._min_replicas, self._ack_timeout_ms)  # type: ignore[no-untyped-call]
            result, got = pipe.execute()
        why = replicas.shortfall(self._min_replicas, int(got), self._ack_timeout_ms)
        if why is not None:
            raise PublishError(f"{count} task messages enqueued, not replicated: {why}")
        return result

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each Celery queue (``LLEN``).

        :raises PublishError: Redis is unreachable.
        """
        names = sorted(set(queues))
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.llen(name)
                return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))
        except redis.RedisError as exc:
            raise PublishError(f"queue depths unknown: {exc!r}") from exc

    @property
    def client(self) -> redis.Redis:
        """The Redis client of the Celery broker (thread-safe)."""
        return self._redis

    def close(self) -> None:
        """Release the broker connections."""
        self._connection.release()
        self._redis.close()

    def _kombu_channel(self) -> Any:
        if self._channel is None:
            self._channel = self._connection.default_channel
        return self._channel
