"""Publishing records to Celery: the only module that sends task messages (Redis I/O).

Messages are built by Celery (``as_task_v2``) and kombu (``prepare_message`` and the Redis
channel's ``basic_publish``) exactly as ``send_task`` builds them, so any Celery worker and
Flower read them: once per (task, queue), as a template with markers where a record's task
id, ``argsrepr``, argument and delivery tag go. Only the final ``LPUSH`` differs: a whole
poll batch goes to Redis in one Lua script that also advances a per-partition *published watermark*
(:func:`bridge.keys.published_watermark`). A record below its partition's watermark was
already enqueued and is skipped, so a record is enqueued once however often it is consumed.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from kombu.serialization import dumps

from bridge import keys
from bridge.errors import ConfigError, PublishError
from bridge.record import Envelope, to_task_arg
from bridge.settings import CelerySettings

log = logging.getLogger(__name__)

# KEYS: the watermark keys, then the queue keys. ARGV: number of watermark keys, TTL in
# seconds, then per record: watermark index, offset, queue index (0: advance only), payload.
_ENQUEUE = """
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local marks = {}
for i = 1, n do marks[i] = tonumber(redis.call('GET', KEYS[i]) or '-1') end
local enqueued, skipped = 0, 0
for j = 3, #ARGV, 4 do
  local w, offset, q = tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  if offset >= marks[w] then
    if q > 0 then
      redis.call('LPUSH', KEYS[n + q], ARGV[j + 3])
      enqueued = enqueued + 1
    end
    marks[w] = offset + 1
  else
    skipped = skipped + 1
  end
end
for i = 1, n do redis.call('SET', KEYS[i], marks[i], 'EX', ttl) end
return {enqueued, skipped}
"""

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True, slots=True)
class Message:
    """One record's task message, ready for its queue (``payload`` is None: advance only)."""

    topic: str
    partition: int
    offset: int
    queue: str | None
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one batch publish did."""

    enqueued: int
    skipped: int


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


@dataclass(frozen=True, slots=True)
class _Template:
    """A pre-built message with holes: the task id, ``argsrepr``, the body, the delivery tag.

    The body (the task's ``[args, kwargs, embed]`` JSON) travels base64-encoded; only its
    argument differs from record to record.
    """

    key: str
    payload: str
    body_head: str
    body_tail: str
    body_b64: str
    delivery_tag: str

    @classmethod
    def parse(cls, key: str, payload: str, body: str | bytes) -> _Template:
        message = json.loads(payload)
        body_text = _text(body)
        head, tail = body_text.split(json.dumps(_ARG), 1)
        return cls(
            key=key,
            payload=payload,
            body_head=head,
            body_tail=tail,
            body_b64=message["body"],
            delivery_tag=message["properties"]["delivery_tag"],
        )

    def fill(self, *, task_id: str, argsrepr: str, arg_json: str, delivery_tag: str) -> bytes:
        body = base64.b64encode(f"{self.body_head}{arg_json}{self.body_tail}".encode())
        # Record data (argsrepr shows the key) goes in last, so it is never taken for a marker.
        return (
            self.payload.replace(self.body_b64, body.decode("ascii"), 1)
            .replace(self.delivery_tag, delivery_tag, 1)
            .replace(_ID, task_id)
            .replace(json.dumps(_REPR), json.dumps(argsrepr), 1)
            .encode()
        )


class Dispatcher:
    """Turn envelopes into Celery task messages and enqueue them batch by batch."""

    def __init__(self, celery: CelerySettings, group_id: str) -> None:
        if not celery.broker_url.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                f"celery.broker_url: the bridge publishes to a Redis broker "
                f"({', '.join(_REDIS_SCHEMES)}), got {celery.broker_url!r}"
            )
        self._group_id = group_id
        self._ttl_s = celery.enqueue_dedup_ttl_s
        self._app = publisher_app(celery)
        self._connection = self._app.connection_for_write()
        self._channel: Any = None
        self._templates: dict[tuple[str, str], _Template] = {}
        self._origin = f"kafka-celery-bridge@{group_id}"
        self._redis = redis.Redis.from_url(
            celery.broker_url, socket_timeout=5, socket_connect_timeout=5
        )
        self._script = self._redis.register_script(_ENQUEUE)

    def message(self, task: str, queue: str, envelope: Envelope) -> Message:
        """Build the task message of one record, addressed to ``task`` by name.

        :raises PublishError: the broker could not be reached to build the first message of
            this task and queue.
        """
        template = self._templates.get((task, queue))
        if template is None:
            try:  # kombu's channel connects to Redis on first use
                template = self._templates[(task, queue)] = self._template(task, queue)
            except (OperationalError, redis.RedisError, OSError) as exc:
                raise PublishError(f"no message template for {task} on {queue}: {exc!r}") from exc
        rec = envelope.record
        payload = template.fill(
            task_id=envelope.task_id(),
            argsrepr=repr(rec),
            arg_json=json.dumps(to_task_arg(envelope)),
            delivery_tag=str(uuid.uuid4()),
        )
        return Message(rec.topic, rec.partition, rec.offset, template.key, payload)

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

    def publish(self, messages: Sequence[Message]) -> Outcome:
        """Enqueue ``messages`` (in offset order per partition) atomically, skipping any
        record at or past which its partition was already enqueued.

        :raises PublishError: Redis did not run the script (nothing or everything was done).
        """
        if not messages:
            return Outcome(0, 0)
        marks: dict[tuple[str, int], int] = {}
        queues: dict[str, int] = {}
        argv: list[Any] = []
        for m in messages:
            w = marks.setdefault((m.topic, m.partition), len(marks) + 1)
            if m.queue is None or m.payload is None:  # dead-lettered by the bridge
                argv += [w, m.offset, 0, b""]
            else:
                argv += [w, m.offset, queues.setdefault(m.queue, len(queues) + 1), m.payload]
        wm_keys = [keys.published_watermark(self._group_id, t, p) for t, p in marks]
        try:
            enqueued, skipped = self._script(
                keys=[*wm_keys, *queues],
                args=[len(wm_keys), self._ttl_s, *argv],
            )
        except redis.RedisError as exc:
            raise PublishError(f"{len(messages)} task messages not enqueued: {exc!r}") from exc
        return Outcome(int(enqueued), int(skipped))

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


def _text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data
