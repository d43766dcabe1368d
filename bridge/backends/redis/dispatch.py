"""Publishing records to Celery: the only module that sends task messages (Redis I/O).

Messages are built by Celery (``as_task_v2``) and kombu (``prepare_message`` and the Redis
channel's ``basic_publish``) exactly as ``send_task`` builds them, so any Celery worker and
Flower read them: once per (task, queue), as a template with markers where a record's task
id, ``argsrepr``, argument and delivery tag go. Only the final ``LPUSH`` differs: a whole
poll batch goes to Redis in one Lua script that also advances a per-partition *published watermark*
(:func:`bridge.keys.published_watermark`). A record below its partition's watermark was
already enqueued and is skipped, so a record is enqueued once however often it is consumed.
Each watermark belongs to one incarnation of its topic (:mod:`bridge.consumer.incarnations`).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from kombu.serialization import dumps

from bridge import keys
from bridge.backends.redis import ordering, scripts
from bridge.errors import PublishError
from bridge.hooks import Outcome, Refusal
from bridge.record import ArgWriter, Envelope, message_origin, record_repr, to_task_arg
from bridge.record import task_id as record_task_id
from bridge.routing import Route
from bridge.settings import CelerySettings

log = logging.getLogger(__name__)

# One poll batch in one script (bridge/backends/redis/lua/enqueue.lua documents its KEYS and ARGV).
_ENQUEUE = scripts.script("enqueue")

_UNVERIFIED = 3  # the script's refusal code of a record below a watermark it cannot verify


@dataclass(frozen=True, slots=True)
class Ordered:
    """Where an ordered record waits: its key's FIFO, and the limits on waiting records."""

    fifo: str
    max_per_key: int
    max_per_partition: int


class Message(NamedTuple):
    """One record's task message, ready for its queue (``payload`` is None: advance only).

    For an ordered record, ``payload`` is its key FIFO element (see
    :mod:`bridge.backends.redis.ordering`).
    A named tuple, not a dataclass: one is built per record, and this builds 3x faster.
    """

    topic: str
    partition: int
    offset: int
    queue: str | None
    payload: bytes | None
    ordered: Ordered | None = None


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
        },
    )
    return app


class CapturedBatch:
    """Stands in for kombu's Redis publish batch: keeps the final Redis commands of what is
    published through it and runs none (kombu 5.7 hands them to ``add``)."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def publish(self, message: Any, **kwargs: Any) -> None:
        self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))

    def lpush(self) -> tuple[str, bytes]:
        """The one ``LPUSH`` captured: its queue and message.

        :raises PublishError: kombu did something else (a kombu change we must notice).
        """
        pushes = [args for name, args in self.commands if name == "lpush"]
        if len(pushes) != 1:
            raise PublishError(f"expected one LPUSH from kombu, got {self.commands!r}")
        [(queue, message)] = pushes
        return _text(queue), message.encode() if isinstance(message, str) else message

    # The rest of kombu's batch protocol: nothing to flush, nothing held elsewhere.
    def flush(self) -> None:
        pass

    def discard(self) -> None:
        self.commands.clear()

    def close(self) -> None:
        pass


# Marker values: plain ASCII, so JSON encoding leaves them as they are.
_ID = "bridge-marker-task-id"
_ARG = "bridge-marker-arg"
_REPR = "bridge-marker-argsrepr"


_HOLES = ("body", "task_id", "argsrepr", "tag")


@dataclass(frozen=True, slots=True)
class _Template:
    """A pre-built message with holes: the task id, ``argsrepr``, the body, the delivery tag.

    ``pieces`` is kombu's own JSON cut at each hole, UTF-8 encoded; ``holes`` says which value
    goes in each cut (an index into :data:`_HOLES`), so filling it is one ``join``. The body
    (the task's ``[args, kwargs, embed]`` JSON) travels base64-encoded; only its argument
    differs from record to record.
    """

    key: str
    pieces: tuple[bytes, ...]
    holes: tuple[int, ...]
    body_head: str
    body_tail: str

    @classmethod
    def parse(cls, key: str, payload: str, body: str | bytes) -> _Template:
        message = json.loads(payload)
        head, tail = _text(body).split(json.dumps(_ARG), 1)
        markers = {
            message["body"]: "body",
            _ID: "task_id",
            json.dumps(_REPR): "argsrepr",
            message["properties"]["delivery_tag"]: "tag",
        }
        cut = re.split(f"({'|'.join(map(re.escape, markers))})", payload)
        return cls(
            key=key,
            pieces=tuple(piece.encode() for piece in cut[0::2]),
            holes=tuple(_HOLES.index(markers[marker]) for marker in cut[1::2]),
            body_head=head,
            body_tail=tail,
        )

    def fill(self, *, task_id: str, argsrepr: str, arg_json: str, delivery_tag: str) -> bytes:
        body = f"{self.body_head}{arg_json}{self.body_tail}".encode()
        values = (
            binascii.b2a_base64(body, newline=False),
            task_id.encode(),
            json.dumps(argsrepr).encode(),
            delivery_tag.encode(),
        )
        parts: list[bytes] = [b""] * (2 * len(self.pieces) - 1)
        parts[0::2] = self.pieces
        parts[1::2] = [values[hole] for hole in self.holes]
        return b"".join(parts)


class DeliveryTags:
    """Unique kombu delivery tags, one per message: a random prefix (a uuid4, once) and a
    counter.

    kombu tags each message with ``str(uuid4())``, which reads ``os.urandom``: a system call
    that releases the GIL, so on every record the loop waited to get it back from
    kafka-python's IO thread (10-12% of the bridge's throughput, measured A/B). The tags only
    need to be unique among the broker's unacked messages, and a 128-bit random prefix per
    dispatcher keeps them so.
    """

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex
        self._counter = itertools.count()

    def next(self) -> str:
        """A tag no other message has (thread-safe: ``next`` on a count holds the GIL)."""
        return f"{self._prefix}-{next(self._counter)}"


class Dispatcher:
    """Turn envelopes into Celery task messages and enqueue them batch by batch."""

    def __init__(self, celery: CelerySettings, group_id: str) -> None:
        self._group_id = group_id
        self._ttl_s = celery.enqueue_dedup_ttl_s
        self._app = publisher_app(celery)
        self._connection = self._app.connection_for_write()
        self._channel: Any = None
        self._templates: dict[tuple[str, str], _Template] = {}
        self._writers: dict[str, ArgWriter] = {}  # by topic
        self._tags = DeliveryTags()
        self._origin = message_origin(group_id)
        self._redis = redis.Redis.from_url(
            celery.broker_url, socket_timeout=5, socket_connect_timeout=5
        )
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
            repr(rec), json.dumps(to_task_arg(envelope)), ordered,
        )  # fmt: skip

    def consumed(self, route: Route, record: Any, ordered: Ordered | None = None) -> Message:
        """The task message of a record as kafka-python consumed it (``topic``, ``partition``,
        ``offset``, ``timestamp``, ``timestamp_type``, ``key``, ``value``, ``headers``) on
        ``route``: what :meth:`message` builds for its envelope, built for the poll loop's speed.

        :raises PublishError: see :meth:`message`.
        """
        template = self._template_for(route.task, route.queue)
        topic, partition, offset = record.topic, record.partition, record.offset
        arg_json = self._writer_for(route).json(
            topic,
            partition,
            offset,
            record.timestamp,
            record.key,
            record.value,
            record.headers,
            timestamp_type=record.timestamp_type,
        )
        return self._filled(
            template, (topic, partition, offset),
            record_task_id(self._group_id, topic, partition, offset),
            record_repr(topic, partition, offset, record.key), arg_json, ordered,
        )  # fmt: skip

    def _filled(
        self,
        template: _Template,
        where: tuple[str, int, int],
        task_id: str,
        argsrepr: str,
        arg_json: str,
        ordered: Ordered | None,
    ) -> Message:
        payload = template.fill(
            task_id=task_id, argsrepr=argsrepr, arg_json=arg_json, delivery_tag=self._tags.next()
        )
        if ordered is not None:
            payload = ordering.element(task_id, int(time.time() * 1000), template.key, payload)
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

    def _template_for(self, task: str, queue: str) -> _Template:
        template = self._templates.get((task, queue))
        if template is None:
            try:  # kombu's channel connects to Redis on first use
                template = self._templates[(task, queue)] = self._template(task, queue)
            except (OperationalError, redis.RedisError, OSError) as exc:
                raise PublishError(f"no message template for {task} on {queue}: {exc!r}") from exc
        return template

    def _template(self, task: str, queue: str) -> _Template:
        """The message of one (task, queue) as Celery's and kombu's own code build it, with
        markers where each record's values go."""
        headers, properties, body, _ = self._app.amqp.as_task_v2(
            _ID, task, args=(_ARG,), kwargs={}, argsrepr=_REPR, kwargsrepr="{}",
            origin=self._origin,
        )  # fmt: skip
        content_type, content_encoding, data = dumps(body, serializer="json")
        properties["delivery_mode"] = 2  # persistent, as Celery's default exchange says
        channel = self._kombu_channel()
        message = channel.prepare_message(
            data, 0, content_type, content_encoding, headers, properties
        )
        capture = CapturedBatch(channel)
        capture.publish(message, exchange="", routing_key=queue)
        key, payload = capture.lpush()
        return _Template.parse(key, _text(payload), data)

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
        :raises PublishError: Redis did not run the script (nothing or everything was done).
        """
        if not messages:
            return Outcome(0, 0)
        batch = _Batch(self._group_id, topic_ids)
        for m in messages:
            batch.add(m)
        try:
            result = self._script(
                keys=batch.keys(),
                args=[len(batch.marks), self._ttl_s, len(batch.queues), head_deadline_ms,
                      *batch.strict(), *batch.argv],
            )  # fmt: skip
        except redis.RedisError as exc:
            raise PublishError(f"{len(messages)} task messages not enqueued: {exc!r}") from exc
        enqueued, skipped, appended, *refused = (int(v) for v in result)
        return Outcome(enqueued, skipped, appended, batch.refusals(refused))

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


def task_of(message: bytes) -> tuple[str, dict[str, Any]]:
    """The task name and first argument (a record envelope) of a JSON task message.

    :raises ValueError: not a JSON Celery protocol 2 message with a dict first argument.
    """
    payload = json.loads(message)
    args, _kwargs, _embed = json.loads(base64.b64decode(payload["body"]))
    if not args or not isinstance(args[0], dict):
        raise ValueError("the task message has no record envelope")
    return str(payload["headers"]["task"]), args[0]


class _Batch:
    """The keys and arguments of one run of the enqueue script."""

    def __init__(self, group_id: str, topic_ids: Mapping[str, str | None] | None) -> None:
        self.group_id = group_id
        self.topic_ids = topic_ids
        self.marks: dict[tuple[str, int], int] = {}
        self.queues: dict[str, int] = {}
        self.fifos: dict[str, int] = {}
        self.argv: list[Any] = []
        self._limits: dict[int, tuple[int, int]] = {}  # partition index: (per key, partition)

    def add(self, m: Message) -> None:
        w = self.marks.setdefault((m.topic, m.partition), len(self.marks) + 1)
        if m.queue is None or m.payload is None:  # dead-lettered by the bridge
            self.argv += [w, m.offset, 0, 0, 0, 0, b""]
        elif m.ordered is None:
            q = self.queues.setdefault(m.queue, len(self.queues) + 1)
            self.argv += [w, m.offset, 1, q, 0, 0, m.payload]
        else:
            o = m.ordered
            f = self.fifos.setdefault(o.fifo, len(self.fifos) + 1)
            self._limits[w] = (o.max_per_key, o.max_per_partition)
            self.argv += [w, m.offset, 2, f, o.max_per_key, o.max_per_partition, m.payload]

    def keys(self) -> list[str]:
        marks = [self._watermark(t, p) for t, p in self.marks]
        waiting = [keys.ordered_waiting(self.group_id, t, p) for t, p in self.marks]
        heads = keys.ordered_heads(self.group_id)
        return [*marks, *waiting, heads, *self.queues, *self.fifos]

    def strict(self) -> list[int]:
        """Per partition: 1 where a record below the watermark is refused, not skipped."""
        if self.topic_ids is None:
            return [0] * len(self.marks)
        return [int(self.topic_ids.get(t) is None) for t, _ in self.marks]

    def _watermark(self, topic: str, partition: int) -> str:
        topic_id = None if self.topic_ids is None else self.topic_ids.get(topic)
        return keys.published_watermark(self.group_id, topic, partition, topic_id)

    def refusals(self, flat: Sequence[int]) -> tuple[Refusal, ...]:
        partitions = list(self.marks)
        fifos = list(self.fifos)
        found = []
        for w, offset, code, f in zip(*[iter(flat)] * 4, strict=True):
            topic, partition = partitions[w - 1]
            if code == _UNVERIFIED:
                watch = self._watermark(topic, partition)
                found.append(Refusal(topic, partition, offset, "watermark", watch, 1))
                continue
            watch = (
                fifos[f - 1] if code == 1 else keys.ordered_waiting(self.group_id, topic, partition)
            )
            full = "key" if code == 1 else "partition"
            found.append(Refusal(topic, partition, offset, full, watch, self._limits[w][code - 1]))
        return tuple(found)


def _text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data
