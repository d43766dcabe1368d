"""What waits in Redis for its time: delayed retries and dead letters not yet written.

Delayed retries are Celery task messages kept in a sorted set instead of a queue, so that
long delays neither outlive the broker's visibility timeout inside a worker nor sit in worker
memory. :func:`move_due` moves every due message to its queue in one Lua script (atomic: each
message is moved exactly once, however many bridges of the group run it).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from bridge import keys
from bridge.backends.redis import scripts
from bridge.backoff import exponential_ms

log = logging.getLogger(__name__)

_SEP = "\0"

# bridge/backends/redis/lua/ documents each script.
_MOVE_DUE = scripts.script("retries_move_due")
_UNPARK = scripts.script("dead_letter_unpark")


def schedule_retry(
    client: redis.Redis, group_id: str, queue: str, message: bytes, due_ms: int
) -> None:
    """Keep a retry's task message until ``due_ms`` (ms since the epoch)."""
    member = queue.encode() + _SEP.encode() + message
    client.zadd(keys.delayed_retries(group_id), {member: due_ms})


class Scheduler:
    """The bridge's side: move due retries to their queues."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._key = keys.delayed_retries(group_id)
        self._move = client.register_script(_MOVE_DUE)

    def move_due(self, now_ms: int, limit: int = 1000) -> int:
        """Move up to ``limit`` retries due by ``now_ms`` to their queues; return how many.

        :raises redis.RedisError: Redis is unreachable.
        """
        return int(self._move(keys=[self._key], args=[now_ms, limit]))

    def waiting(self) -> int:
        """Retries waiting in Redis."""
        return int(self._client.zcard(self._key))

    def summary(self, now_ms: int) -> RetrySummary:
        """When the next and the last waiting retry are due, and how many are overdue.

        :raises redis.RedisError: Redis is unreachable.
        """
        with self._client.pipeline(transaction=False) as pipe:
            pipe.zrange(self._key, 0, 0, withscores=True)
            pipe.zrange(self._key, -1, -1, withscores=True)
            pipe.zcount(self._key, "-inf", now_ms)
            first, last, overdue = pipe.execute()
        return RetrySummary(
            next_due_ms=int(first[0][1]) if first else None,
            last_due_ms=int(last[0][1]) if last else None,
            overdue=int(overdue),
        )


@dataclass(frozen=True, slots=True)
class RetrySummary:
    """When delayed retries waiting in Redis are due (ms since the epoch). Overdue retries
    pile up when no bridge of the group runs: the bridge moves them to their queues."""

    next_due_ms: int | None
    last_due_ms: int | None
    overdue: int


class DeadLetterStore:
    """Dead letters Kafka did not take yet (pending) or will never take (parked)."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._pending = keys.pending_dead_letters(group_id)
        self._parked = keys.parked_dead_letters(group_id)
        self._unpark = client.register_script(_UNPARK)

    def defer(
        self, dead_letter: dict[str, Any], due_ms: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Keep a dead letter for another write attempt at ``due_ms``; with ``pipe``, as one
        more command of that pipeline (a transaction the caller executes)."""
        client = self._client if pipe is None else pipe
        client.zadd(self._pending, {json.dumps(dead_letter, sort_keys=True): due_ms})

    def due(self, now_ms: int, limit: int = 100) -> list[dict[str, Any]]:
        """Pending dead letters whose next attempt is due."""
        members = self._client.zrangebyscore(self._pending, "-inf", now_ms, start=0, num=limit)
        return [json.loads(cast(bytes, m)) for m in members]

    def written(self, dead_letter: dict[str, Any]) -> None:
        """Forget a pending dead letter: Kafka has it now."""
        self._client.zrem(self._pending, json.dumps(dead_letter, sort_keys=True))

    def retry_later(self, old: dict[str, Any], new: dict[str, Any], due_ms: int) -> None:
        """Replace a pending dead letter by its updated state, due again at ``due_ms``."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._pending, json.dumps(old, sort_keys=True))
            pipe.zadd(self._pending, {json.dumps(new, sort_keys=True): due_ms})
            pipe.execute()

    def park(self, dead_letter: dict[str, Any]) -> None:
        """Move a dead letter Kafka refused for good out of the pending set."""
        with self._client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._pending, json.dumps(dead_letter, sort_keys=True))
            pipe.hset(self._parked, dead_letter["task_id"], json.dumps(dead_letter))
            pipe.execute()

    def parked(self) -> list[dict[str, Any]]:
        """Every parked dead letter (for ``replay --parked``), by task id."""
        found = self._client.hgetall(self._parked)
        return [json.loads(found[k]) for k in sorted(found)]

    def unpark(self, task_id: str, enqueue: tuple[str, bytes] | None = None) -> bool:
        """Forget the parked dead letter of ``task_id``, once it was redriven; with
        ``enqueue`` (queue, task message), push that message in the same atomic step.

        :returns: False when it was not parked (any more): nothing was pushed.
        """
        queue, message = enqueue if enqueue is not None else ("", b"")
        return bool(self._unpark(keys=[self._parked, queue], args=[task_id, message]))

    def next_attempt_ms(self) -> int | None:
        """When the next pending dead letter is due for a write attempt (ms), if any."""
        first = self._client.zrange(self._pending, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def some_parked(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` parked dead letters (in no particular order)."""
        found: list[dict[str, Any]] = []
        for _, value in self._client.hscan_iter(self._parked, count=limit):
            found.append(json.loads(value))
            if len(found) >= limit:
                break
        return found

    def counts(self) -> tuple[int, int]:
        """(pending, parked) dead letters."""
        with self._client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._pending)
            pipe.hlen(self._parked)
            pending, parked = pipe.execute()
        return int(pending), int(parked)


class Every(threading.Thread):
    """A daemon thread that runs ``job`` every ``interval_s`` until :meth:`stop`.

    A failing job is logged, never allowed to end the thread: the first failure with its
    traceback, the next ones in a line each, and it is tried again after a delay that doubles
    from ``interval_s`` up to ``max(interval_s, 10 s)`` (a Redis outage does not make a
    100 ms duty log ten tracebacks a second).
    """

    def __init__(self, name: str, interval_s: float, job: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self._interval_s = interval_s
        self._job = job
        self._stopped = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self._stopped.wait(self._delay_s(failures)):
            try:
                self._job()
            except Exception as exc:
                failures += 1
                self._failed(failures, exc)
                continue
            if failures:
                log.warning("%s works again after %d failed attempt(s)", self.name, failures)
            failures = 0

    def _delay_s(self, failures: int) -> float:
        if not failures:
            return self._interval_s
        initial_ms = max(1, int(self._interval_s * 1000))
        max_ms = max(initial_ms, _FAILING_MAX_DELAY_MS)
        return exponential_ms(failures, initial_ms=initial_ms, max_ms=max_ms) / 1000

    def _failed(self, failures: int, exc: Exception) -> None:
        delay_s = self._delay_s(failures)
        if failures == 1:
            log.exception("%s failed; trying again in %.3f s", self.name, delay_s)
        else:
            log.error("%s failed again (%d in a row); trying again in %.3f s: %r",
                      self.name, failures, delay_s, exc)  # fmt: skip

    def stop(self, timeout_s: float) -> None:
        """Stop after the job in hand; wait at most ``timeout_s`` for it."""
        self._stopped.set()
        if self.is_alive():
            self.join(timeout_s)


_FAILING_MAX_DELAY_MS = 10_000
