"""What each live worker says it runs: its queues and the tasks it registers (Redis I/O and a
pure check), so that ``status`` and the bridge can name a route whose task no live worker
runs before (or while) its records are dead-lettered as ``unroutable``.

Each worker's consumer step (:mod:`bridge.worker.consumer_step`) writes its :class:`Registration`
every :data:`INTERVAL_S` seconds under :func:`bridge.keys.worker_registration`, expiring after
:data:`TTL_S`; a worker that stops deletes it. Only workers that import ``bridge`` register:
a worker of an app that never does is not seen here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from bridge import keys

INTERVAL_S = 10.0
TTL_S = 30


@dataclass(frozen=True, slots=True)
class Registration:
    """One worker: its node name, the queues it consumes, its ``RecordTask`` handlers and its
    other tasks (Celery's own ``celery.*`` tasks left out), as of ``at_ms``."""

    node: str
    queues: tuple[str, ...]
    record_tasks: tuple[str, ...]
    other_tasks: tuple[str, ...]
    at_ms: int

    def to_json(self) -> str:
        """The JSON stored in Redis."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Registration:
        """Inverse of :meth:`to_json`."""
        raw = json.loads(data)
        return cls(
            node=str(raw["node"]),
            queues=tuple(raw["queues"]),
            record_tasks=tuple(raw["record_tasks"]),
            other_tasks=tuple(raw["other_tasks"]),
            at_ms=int(raw["at_ms"]),
        )


def register(client: redis.Redis, registration: Registration) -> None:
    """Write (or refresh) a worker's registration.

    :raises redis.RedisError: Redis is unreachable.
    """
    name = keys.worker_registration(registration.node)
    client.set(name, registration.to_json(), ex=TTL_S)


def unregister(client: redis.Redis, node: str) -> None:
    """Forget a stopping worker's registration.

    :raises redis.RedisError: Redis is unreachable.
    """
    client.delete(keys.worker_registration(node))


def read_registrations(client: redis.Redis) -> list[Registration]:
    """Every live worker's registration, by node name.

    :raises redis.RedisError: Redis is unreachable.
    """
    pattern = keys.worker_registrations_pattern()
    names = sorted(client.scan_iter(match=pattern, count=100))
    values = client.mget(names) if names else []
    return [Registration.from_json(v) for v in values if v is not None]


@dataclass(frozen=True, slots=True)
class TaskCoverage:
    """Who runs a route's task: live registered workers consuming its queue, those of them
    with a ``RecordTask`` of that name, and those with a task of that name that is not one."""

    consuming: int
    registered: int
    not_record_task: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "consuming": self.consuming,
            "registered": self.registered,
            "not_record_task": list(self.not_record_task),
        }


def coverage(task: str, queue: str, registrations: Iterable[Registration]) -> TaskCoverage:
    """How the live workers consuming ``queue`` cover ``task`` (pure)."""
    consuming = [r for r in registrations if queue in r.queues]
    return TaskCoverage(
        consuming=len(consuming),
        registered=sum(task in r.record_tasks for r in consuming),
        not_record_task=tuple(r.node for r in consuming if task in r.other_tasks),
    )


def task_problem(task: str, queue: str, cover: TaskCoverage) -> str | None:
    """What is wrong with a route's task among the workers of its queue, or ``None`` (pure):
    nothing can be said while no registered worker consumes the queue."""
    if cover.not_record_task:
        nodes = ", ".join(cover.not_record_task)
        return (
            f"task {task} is not a RecordTask in worker(s) {nodes} (declare it with "
            f"base=RecordTask): its records are dead-lettered as unroutable"
        )
    if cover.consuming and not cover.registered:
        return (
            f"task {task} is registered by none of the {cover.consuming} live worker(s) of "
            f"queue {queue}: its records are dead-lettered as unroutable"
        )
    return None
