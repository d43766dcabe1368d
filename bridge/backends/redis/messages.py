"""Celery task messages for Redis, as Celery and kombu build them, made into templates.

A message is built once per (task, queue) by Celery (``as_task_v2``) and kombu
(``prepare_message`` and the Redis channel's ``basic_publish``, whose final ``LPUSH`` is
captured, not run) exactly as ``send_task`` builds it, with markers where a record's task id,
``argsrepr``, argument and delivery tag go; :class:`Template` fills them with one ``join``.
:class:`DeliveryTags` makes the tags, :func:`task_of` reads a message back. No Redis command
runs here: the dispatcher (:mod:`bridge.backends.redis.dispatch`) sends what is built.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.serialization import dumps

from bridge.errors import PublishError


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
class Template:
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
    def build(
        cls, app: Celery, channel: Any, task: str, queue: str, origin: str, retries: int = 0
    ) -> Template:
        """The message of one (task, queue) as Celery's and kombu's own code build it, with
        markers where each record's values go.

        :param channel: a kombu Redis channel (connecting to Redis on first use).
        :param origin: the ``origin`` header of every message.
        :param retries: the ``retries`` header of every message (0: a first attempt).
        :raises PublishError: kombu did not publish with one ``LPUSH``.
        """
        headers, properties, body, _ = app.amqp.as_task_v2(
            _ID, task, args=(_ARG,), kwargs={}, argsrepr=_REPR, kwargsrepr="{}", origin=origin,
            retries=retries,
        )  # fmt: skip
        content_type, content_encoding, data = dumps(body, serializer="json")
        properties["delivery_mode"] = 2  # persistent, as Celery's default exchange says
        message = channel.prepare_message(
            data, 0, content_type, content_encoding, headers, properties
        )
        capture = CapturedBatch(channel)
        capture.publish(message, exchange="", routing_key=queue)
        key, payload = capture.lpush()
        return cls.parse(key, _text(payload), data)

    @classmethod
    def parse(cls, key: str, payload: str, body: str | bytes) -> Template:
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


def task_of(message: bytes) -> tuple[str, dict[str, Any]]:
    """The task name and first argument (a record envelope) of a JSON task message.

    :raises ValueError: not a JSON Celery protocol 2 message with a dict first argument.
    """
    payload = json.loads(message)
    args, _kwargs, _embed = json.loads(base64.b64decode(payload["body"]))
    if not args or not isinstance(args[0], dict):
        raise ValueError("the task message has no record envelope")
    return str(payload["headers"]["task"]), args[0]


def _text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data
