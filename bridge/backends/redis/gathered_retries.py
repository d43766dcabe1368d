"""Retries of batched routes, waiting in Redis to be gathered into batches (Redis I/O).

A worker keeps each retry of a batched route's record as an item (:func:`keep`): its member
(:mod:`bridge.retry_batches`) in a sorted set scored by the record's own due time, and its
envelope in a hash, in one transaction. The bridge's :class:`Gatherer` takes the due members,
cuts them into batches (:func:`bridge.retry_batches.gather`), builds each batch's task message
as the dispatcher builds a batch's (:class:`~bridge.backends.redis.messages.Template`: Celery's
and kombu's own message), and moves it with ``lua/retries_gather.lua``: its members leave
Redis and the message is pushed once, atomically, however many bridges of the group run it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bridge import keys
from bridge.backends.redis import scripts
from bridge.backends.redis.dispatch import publisher_app
from bridge.backends.redis.messages import DeliveryTags, Template
from bridge.record import message_origin
from bridge.retry_batches import Gathered, RetryItem, gather
from bridge.settings import CelerySettings

log = logging.getLogger(__name__)

# bridge/backends/redis/lua/ documents the script.
_GATHER = scripts.script("retries_gather")


def keep(
    client: redis.Redis, group_id: str, item: RetryItem, envelope_json: str, due_ms: int
) -> None:
    """Keep ``item`` (with its record's envelope, a JSON object) until ``due_ms`` (ms since the
    epoch). Keeping the same item again only updates its envelope and due time.

    :raises redis.RedisError: it was not kept.
    """
    member = item.member()
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.gathered_retries(group_id), {member: due_ms})
        pipe.hset(keys.gathered_retry_envelopes(group_id), member, envelope_json)
        pipe.execute()


class BatchMessages:
    """Builds the task message of a batch of gathered retries: one template per task, queue
    and ``retries`` (the header each message carries)."""

    def __init__(self, celery: CelerySettings, group_id: str) -> None:
        self._group_id = group_id
        self._app = publisher_app(celery)
        self._connection = self._app.connection_for_write()
        self._channel: Any = None
        self._templates: dict[tuple[str, str, int], Template] = {}
        self._tags = DeliveryTags()
        self._origin = message_origin(group_id)

    def build(self, batch: Gathered, envelopes: Sequence[bytes]) -> tuple[str, bytes]:
        """The queue key and the task message of ``batch``, whose argument is the list of its
        records' envelopes (each a JSON object).

        :raises PublishError: the first template of this task, queue and retries could not be
            built (Redis unreachable).
        """
        template = self._template_for(batch.task, batch.queue, batch.retries)
        arg_json = "[" + ",".join(e.decode() for e in envelopes) + "]"
        message = template.fill(
            task_id=batch.task_id(self._group_id), argsrepr=batch.argsrepr(),
            arg_json=arg_json, delivery_tag=self._tags.next(),
        )  # fmt: skip
        return template.key, message

    def _template_for(self, task: str, queue: str, retries: int) -> Template:
        template = self._templates.get((task, queue, retries))
        if template is None:
            if self._channel is None:  # kombu's channel connects to Redis on first use
                self._channel = self._connection.default_channel
            template = self._templates[(task, queue, retries)] = Template.build(
                self._app, self._channel, task, queue, self._origin, retries=retries
            )
        return template

    def close(self) -> None:
        """Release the broker connection."""
        self._connection.release()


class Gatherer:
    """The bridge's side: gather due retries into batch messages, to their queues.

    :param batch_size: the most records a batch of a topic's retries carries (its route's
        ``batch_size``).
    """

    def __init__(
        self,
        client: redis.Redis,
        group_id: str,
        messages: BatchMessages,
        batch_size: Callable[[str], int],
    ) -> None:
        self._client = client
        self._key = keys.gathered_retries(group_id)
        self._envelopes = keys.gathered_retry_envelopes(group_id)
        self._messages = messages
        self._batch_size = batch_size
        self._move = client.register_script(_GATHER)

    def move_due(self, now_ms: int, limit: int) -> int:
        """Gather the retries due by ``now_ms`` (the earliest ``limit``) into batch messages and
        push each to its queue.

        :returns: how many due retries were read (``limit``: more may be due).
        :raises redis.RedisError: Redis is unreachable.
        """
        members: list[bytes] = self._client.zrange(  # type: ignore[assignment]
            self._key, "-inf", now_ms, byscore=True, offset=0, num=limit
        )
        batches, strangers = gather(members, self._batch_size)
        if strangers:
            log.error("dropped %d member(s) of %s that are not retries: %r", len(strangers),
                      self._key, strangers[:3])  # fmt: skip
            self._drop(strangers)
        for batch in batches:
            self._send(batch)
        return len(members)

    def _send(self, batch: Gathered) -> None:
        envelopes: list[bytes | None] = self._client.hmget(  # type: ignore[assignment]
            self._envelopes, batch.members
        )
        missing = [m for m, e in zip(batch.members, envelopes, strict=True) if e is None]
        if missing:
            # Moved meanwhile by another bridge (then dropping is a no-op), or broken: the
            # others go in the next round.
            self._drop(missing)
            return
        queue, message = self._messages.build(batch, [e for e in envelopes if e is not None])
        moved = int(self._move(keys=[self._key, self._envelopes, queue],
                               args=[message, *batch.members]))  # fmt: skip
        if moved:
            log.debug("gathered %d retries of %s (retry %d) into one batch on %s", moved,
                      batch.topic, batch.retries, batch.queue)  # fmt: skip

    def _drop(self, members: Sequence[str | bytes]) -> None:
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._key, *members)
            pipe.hdel(self._envelopes, *members)
            pipe.execute()
