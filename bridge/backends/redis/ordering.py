"""Ordered routes: one FIFO per key in Redis, and the gate that lets one record per key run.

A key's FIFO (:func:`bridge.keys.ordered_queue`) holds the task messages of its records in
offset order; its first element is the *head*, the only record of the key that may run. Each
element is ``task_id \\0 appended_ms \\0 queue \\0 task message``. The states of a key::

    idle (empty) --append--> head out --done--> next head out ... --done--> idle
                              |   ^ retrying (head stays; later records wait)
                              |   +--stall timeout: the head is published again
                              +--exhausted, on_exhausted = park--> parked --release--> head out
                                                                          (resume or skip)

Every transition is one Lua script (a file of its own in ``bridge/backends/redis/lua/``), so
it is atomic against workers, bridges and operators acting on the same key at once:

- *append* runs inside the bridge's batch enqueue (:mod:`bridge.backends.redis.dispatch`), together
  with the
  published watermark, so a re-consumed record is never appended twice; it publishes the head
  when the key was idle, and refuses records past the key's or the partition's limit.
- *start* lets a task run only if it is its key's head (a stale copy of an earlier head, e.g.
  redelivered after its worker died past ``done``, is dropped) and the key is not parked.
- *done* pops the head and publishes the next record's message (or leaves the key idle).
- *batch done* pops the first records of a batch (on a batched ordered route a head is
  published with up to ``batch_size`` records of its key, in one message): then the next
  head is published, or, when the record after them failed, that record is the head and goes
  on by its own task (retrying, dead-lettered, parked) as any failing head.
- *retrying* keeps the head and postpones its stall deadline past the retry's due time.
- *park* takes the head out of the stall watch until an operator releases it; a head whose
  dead letter waits in Redis (Kafka down) is taken out of it too, and the bridge calls *done*
  once it has written the dead letter.

Every key whose head is out has a deadline in :func:`bridge.keys.ordered_heads`; the bridge's
watchdog publishes a head again when its deadline passes (its message was lost), so no key
stalls for ever.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from bridge import keys
from bridge.backends.redis import scripts
from bridge.errors import NotParkedError

log = logging.getLogger(__name__)

_SEP = b"\0"

# One Lua script per transition (bridge/backends/redis/lua/ordered_*.lua documents each).
_START = scripts.script("ordered_start")
_DONE = scripts.script("ordered_done")
_BATCH_DONE = scripts.script("ordered_batch_done")
_RETRYING = scripts.script("ordered_retrying")
_PARK = scripts.script("ordered_park")
_RELEASE = scripts.script("ordered_release")
_REPUBLISH = scripts.script("ordered_republish")


@dataclass(frozen=True, slots=True)
class Head:
    """The first element of a key's FIFO."""

    task_id: str
    appended_ms: int
    queue: str
    message: bytes


def element(
    task_id: str, appended_ms: int, queue: str, message: bytes, batch: tuple[int, int] | None = None
) -> bytes:
    """One FIFO element: what the key needs to publish the record when its turn comes.

    :param batch: on a batched ordered route, the route's ``batch_size`` and the length of
        the base64 of the record's piece of its message's body (:func:`batch_piece`): the
        key's head is then published with the records that follow it, in one message
        (``lua/fifo_publish.lua``).
    """
    parts = [task_id.encode(), str(appended_ms).encode(), queue.encode(), message]
    if batch is not None:
        parts.append(b"%d:%d" % batch)
    return _SEP.join(parts)


def parse_element(data: bytes) -> Head:
    """The parts of a FIFO element (see :func:`element`)."""
    task_id, appended_ms, queue, rest = data.split(_SEP, 3)
    message = rest.split(_SEP, 1)[0]  # a JSON message holds no NUL byte; then its batch part
    return Head(task_id.decode(), int(appended_ms), queue.decode(), message)


def batch_piece(body_head: str, arg_json: str) -> tuple[str, int]:
    """What goes between a message body's head and tail for a record of a batched ordered
    route, and the length of its base64: ``' '`` then the envelope's JSON padded with spaces
    to a multiple of 3 bytes, so that base64 pieces of several records join into a batch's
    body in Lua (``lua/fifo_publish.lua`` shows the layout).

    :raises ValueError: the body's head is not Celery protocol 2's ``[[`` (a Celery change).
    """
    if body_head != "[[":
        raise ValueError(f"a task body starting {body_head!r}: ordered batches need '[['")
    size = len(arg_json.encode())
    pad = -size % 3
    return " " + arg_json + " " * pad, (size + pad) // 3 * 4


def parked_why(
    task_id: str, reason: str, error: dict[str, Any], attempts: int, now_ms: int | None = None
) -> dict[str, Any]:
    """What a parked key keeps about its head: enough to dead-letter it if it is skipped.

    :param reason: a dead-letter reason (``exhausted``, ``non-retryable``) or
        ``dead-letter-refused`` (the head's dead letter was refused by Kafka).
    :param error: :meth:`bridge.deadletter.ErrorInfo.to_dict` of the last failure.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return {
        "task_id": task_id,
        "reason": reason,
        "error": error,
        "attempts": attempts,
        "parked_at_ms": now_ms,
    }


def partition_of(task_id: str) -> int:
    """The partition in a task id ``{group_id}:{topic}:{partition}:{offset}``."""
    return int(task_id.rsplit(":", 2)[1])


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key of an ordered route that is waiting on its head, for ``status``."""

    topic: str
    key: bytes | None
    partition: int | None
    depth: int
    head_task_id: str | None
    oldest_age_s: float
    failing_for_s: float | None
    parked: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: the key as UTF-8 text when it is, else base64 (``key_b64``)."""
        data: dict[str, Any] = {
            "topic": self.topic,
            "depth": self.depth,
            "head_task_id": self.head_task_id,
            "oldest_age_s": round(self.oldest_age_s, 3),
        }
        data.update(_key_fields(self.key, self.partition))
        if self.failing_for_s is not None:
            data["failing_for_s"] = round(self.failing_for_s, 3)
        if self.parked is not None:
            data["parked"] = self.parked
        return data


@dataclass(frozen=True, slots=True)
class KeyGate:
    """One ordered record's view of its key, for the task that runs it."""

    queues: KeyQueues
    fifo: str
    partition: int
    task_id: str
    stall_ms: int

    def start(self) -> bool:
        """Whether the task may run: it is its key's head and the key is not parked."""
        return self.queues.start(self.fifo, self.task_id, _now_ms() + self.stall_ms)

    def done(self) -> bool:
        """The head is finished (handled or dead-lettered): the key's next record goes."""
        return self.queues.done(self.fifo, self.partition, self.task_id, _now_ms() + self.stall_ms)

    def batch_done(self, task_ids: list[str], *, hold: bool) -> int:
        """See :meth:`KeyQueues.batch_done`."""
        deadline_ms = _now_ms() + self.stall_ms
        return self.queues.batch_done(self.fifo, self.partition, task_ids, deadline_ms, hold=hold)

    def retrying(self, delay_s: float) -> None:
        """The head retries in ``delay_s``: its key keeps waiting."""
        now_ms = _now_ms()
        deadline_ms = now_ms + int(delay_s * 1000) + self.stall_ms
        self.queues.retrying(self.fifo, self.task_id, deadline_ms, now_ms)

    def park(self, why: dict[str, Any] | None) -> bool:
        """See :meth:`KeyQueues.park`."""
        return self.queues.park(self.fifo, self.task_id, why)


class KeyQueues:
    """The key FIFOs of one consumer group: the gate for workers, release for operators."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._group_id = group_id
        self._heads = keys.ordered_heads(group_id)
        self._failing = keys.ordered_failing(group_id)
        self._parked = keys.ordered_parked(group_id)
        self._start = client.register_script(_START)
        self._done = client.register_script(_DONE)
        self._batch_done = client.register_script(_BATCH_DONE)
        self._retrying = client.register_script(_RETRYING)
        self._park = client.register_script(_PARK)
        self._release = client.register_script(_RELEASE)
        self._republish = client.register_script(_REPUBLISH)

    def fifo(self, topic: str, key: bytes | None, partition: int) -> str:
        """The Redis key of one key's FIFO."""
        return keys.ordered_queue(self._group_id, topic, key, partition)

    # -- the workers' side -------------------------------------------------------------------

    def start(self, fifo: str, task_id: str, deadline_ms: int) -> bool:
        """Whether ``task_id`` may run now: it is its key's head and the key is not parked."""
        return bool(
            self._start(keys=[fifo, self._heads, self._parked], args=[task_id, deadline_ms])
        )

    def done(self, fifo: str, partition: int, task_id: str, deadline_ms: int) -> bool:
        """The head ``task_id`` is finished: publish the key's next record. False: it was not
        the head (a stale copy), nothing changed."""
        waiting = keys.ordered_waiting(self._group_id, _topic_of(fifo), partition)
        return bool(
            self._done(
                keys=[fifo, waiting, self._heads, self._failing], args=[task_id, deadline_ms]
            )
        )

    def batch_done(
        self, fifo: str, partition: int, task_ids: list[str], deadline_ms: int, *, hold: bool
    ) -> int:
        """The first records of the key's batch, ``task_ids`` (head first), are finished: pop
        them, then publish the next head, or (``hold``: the record after them failed and
        goes on as the head by its own task) only watch it until ``deadline_ms``.

        :returns: how many were popped; 0: they are not the key's first records (a stale
            copy of the batch), nothing changed.
        """
        waiting = keys.ordered_waiting(self._group_id, _topic_of(fifo), partition)
        return int(
            self._batch_done(
                keys=[fifo, waiting, self._heads, self._failing],
                args=[deadline_ms, "1" if hold else "0", *task_ids],
            )
        )

    def retrying(self, fifo: str, task_id: str, deadline_ms: int, now_ms: int) -> None:
        """The head ``task_id`` retries: its key keeps waiting on it until ``deadline_ms``."""
        self._retrying(keys=[fifo, self._heads, self._failing], args=[task_id, deadline_ms, now_ms])

    def park(self, fifo: str, task_id: str, why: dict[str, Any] | None) -> bool:
        """Stop the key at its exhausted head ``task_id`` until :meth:`release`.

        ``why`` None: the head's dead letter is pending; the key only leaves the stall watch
        and waits for the bridge to write it (then :meth:`done`).
        """
        args = [task_id, "" if why is None else json.dumps(why, sort_keys=True)]
        return bool(self._park(keys=[fifo, self._heads, self._failing, self._parked], args=args))

    # -- the bridge's side -----------------------------------------------------------------

    def republish_stalled(self, now_ms: int, deadline_ms: int, limit: int = 100) -> list[str]:
        """Publish again every head presumed lost by ``now_ms``; return their FIFOs."""
        due = self._republish(keys=[self._heads], args=[now_ms, deadline_ms, limit])
        return [_text(fifo) for fifo in due]

    def sizes(self, watched: dict[str, str]) -> dict[str, int]:
        """Current sizes of what held partitions watch: a FIFO's length (``"key"``) or a
        partition's waiting counter (``"partition"``)."""
        names = list(watched)
        with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(name) if watched[name] == "key" else pipe.get(name)
            values = pipe.execute()
        return {name: int(value or 0) for name, value in zip(names, values, strict=True)}

    # -- operators ---------------------------------------------------------------------------

    def head(self, fifo: str) -> Head | None:
        """The key's head, or None when the key is idle."""
        data = cast(bytes | None, self._client.lindex(fifo, 0))
        return None if data is None else parse_element(data)

    def parked_why(self, fifo: str) -> dict[str, Any] | None:
        """Why the key is parked (None: it is not)."""
        data = cast(bytes | None, self._client.hget(self._parked, fifo))
        return None if data is None else cast(dict[str, Any], json.loads(data))

    def release(self, fifo: str, head: Head, *, skip: bool, deadline_ms: int) -> None:
        """Let a parked key go on: run ``head`` again, or drop it (``skip``) and go on with the
        next record. The caller dead-letters a skipped head first.

        :raises NotParkedError: the key is not parked at ``head``.
        """
        waiting = keys.ordered_waiting(self._group_id, _topic_of(fifo), partition_of(head.task_id))
        done = self._release(
            keys=[fifo, self._heads, self._parked, waiting],
            args=[head.task_id, "skip" if skip else "resume", deadline_ms],
        )
        if not done:
            raise NotParkedError(f"{fifo} is not parked at {head.task_id}")

    # -- status ------------------------------------------------------------------------------

    def waiting_per_partition(self) -> dict[tuple[str, int], int]:
        """Records waiting in key FIFOs, per (topic, partition)."""
        pattern = keys.ordered_waiting_pattern(self._group_id)
        names = sorted(_text(n) for n in self._client.scan_iter(match=pattern, count=1000))
        values = self._client.mget(names) if names else []
        counts = {}
        for name, value in zip(names, values, strict=True):
            topic, partition = name.rsplit(":", 2)[-2:]
            counts[(topic, int(partition))] = int(value or 0)
        return counts

    def heads_out(self) -> int:
        """Keys whose head is out (running, queued or retrying)."""
        return int(self._client.zcard(self._heads))

    def waiting_keys(self, now_ms: int, limit: int = 20) -> list[KeyState]:
        """Keys whose head is retrying, longest failing first."""
        failing = {_text(k): int(v) for k, v in self._client.hgetall(self._failing).items()}
        oldest = sorted(failing, key=failing.__getitem__)[:limit]
        return [self._state(fifo, now_ms, failing[fifo], None) for fifo in oldest]

    def parked_keys(self, now_ms: int, limit: int = 100) -> list[KeyState]:
        """Parked keys, longest parked first."""
        parked = {_text(k): json.loads(v) for k, v in self._client.hgetall(self._parked).items()}
        order = sorted(parked, key=lambda fifo: parked[fifo].get("parked_at_ms", 0))[:limit]
        return [self._state(fifo, now_ms, None, parked[fifo]) for fifo in order]

    def counts(self) -> tuple[int, int]:
        """(keys with a failing head, parked keys)."""
        with self._client.pipeline(transaction=False) as pipe:
            pipe.hlen(self._failing)
            pipe.hlen(self._parked)
            failing, parked = pipe.execute()
        return int(failing), int(parked)

    def _state(
        self, fifo: str, now_ms: int, failing_since_ms: int | None, parked: dict[str, Any] | None
    ) -> KeyState:
        topic, key, partition = keys.ordered_key_of(fifo)
        head = self.head(fifo)
        return KeyState(
            topic=topic,
            key=key,
            partition=partition,
            depth=int(self._client.llen(fifo)),
            head_task_id=head.task_id if head else None,
            oldest_age_s=(now_ms - head.appended_ms) / 1000 if head else 0.0,
            failing_for_s=None if failing_since_ms is None else (now_ms - failing_since_ms) / 1000,
            parked=parked,
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _key_fields(key: bytes | None, partition: int | None) -> dict[str, Any]:
    if key is None:
        return {"key": None, "partition": partition}
    try:
        return {"key": key.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": None, "key_b64": base64.b64encode(key).decode("ascii")}


def _topic_of(fifo: str) -> str:
    return keys.ordered_key_of(fifo)[0]


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data
