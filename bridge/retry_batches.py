"""Retries of batched routes, gathered into batches again (pure: no Redis, no Celery).

A record of a batched unordered route whose retry is scheduled is not sent alone in a task
message of its own: the worker keeps a *retry item* in Redis, scored by the record's own due
time (:mod:`bridge.backends.redis.gathered_retries`), and the bridge gathers the due items
into batch messages, up to the route's ``batch_size`` each.

An item is named by its member ``{queue}\\0{task}\\0{topic}\\0{retries}\\0{task_id}``:
``retries`` is the count the record's next attempt runs with (1 for its first retry) and
``task_id`` the record's own (``{group_id}:{topic}:{partition}:{offset}``). Items are gathered
only with items of the same queue, task, topic and ``retries``: a batch of retries carries that
count in its message, so ``self.request.retries`` in the handler, and the ``max_retries`` check,
are each record's own. A record kept twice for the same attempt (its batch ran again after a
worker died) is one member, so it is retried once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.record import BATCH_REPR_PREFIX

_SEP = "\0"
_FIELDS = 5


@dataclass(frozen=True, slots=True)
class RetryItem:
    """One retry of one record of a batched route, waiting to be gathered."""

    queue: str
    task: str
    topic: str
    retries: int
    task_id: str

    def member(self) -> str:
        """Its member in the sorted set of gathered retries."""
        fields = (self.queue, self.task, self.topic, str(self.retries), self.task_id)
        return _SEP.join(fields)

    @classmethod
    def parse(cls, member: str | bytes) -> RetryItem:
        """The item a member names.

        :raises ValueError: not a member :meth:`member` wrote.
        """
        text = member.decode() if isinstance(member, bytes) else member
        fields = text.split(_SEP)
        if len(fields) != _FIELDS:
            raise ValueError(f"not a gathered retry: {text!r}")
        queue, task, topic, retries, task_id = fields
        return cls(queue, task, topic, int(retries), task_id)

    @property
    def batch_key(self) -> tuple[str, str, str, int]:
        """What the items of one batch share: queue, task, topic, ``retries``."""
        return (self.queue, self.task, self.topic, self.retries)


@dataclass(frozen=True, slots=True)
class Gathered:
    """Due retry items that go in one batch message, earliest due first."""

    queue: str
    task: str
    topic: str
    retries: int
    members: tuple[str, ...]

    def task_id(self, group_id: str) -> str:
        """The batch's deterministic task id: ``{group_id}:{topic}:retry-{retries}:{digest}``,
        the digest naming its members (each record keeps its own task id for its dead letter)."""
        digest = hashlib.sha1(_SEP.join(self.members).encode()).hexdigest()[:16]
        return f"{group_id}:{self.topic}:retry-{self.retries}:{digest}"

    def argsrepr(self) -> str:
        """How the batch shows in logs and as its ``argsrepr`` (a batch's prefix)."""
        return f"{BATCH_REPR_PREFIX}{self.topic} retry {self.retries}, {len(self.members)} records)"


def gather(
    members: Iterable[str | bytes], batch_size: Callable[[str], int]
) -> tuple[list[Gathered], list[str | bytes]]:
    """Cut due members (earliest due first) into batches of items that share queue, task,
    topic and ``retries``, each at most ``batch_size(topic)`` items (1 at least).

    :returns: the batches, in the order of their first member, and the members that are not
        retry items (to drop).
    """
    open_: dict[tuple[str, str, str, int], list[str]] = {}
    batches: list[tuple[tuple[str, str, str, int], list[str]]] = []
    strangers: list[str | bytes] = []
    for member in members:
        try:
            item = RetryItem.parse(member)
        except (ValueError, UnicodeDecodeError):
            strangers.append(member)
            continue
        current = open_.get(item.batch_key)
        if current is None or len(current) >= max(1, batch_size(item.topic)):
            current = open_[item.batch_key] = []
            batches.append((item.batch_key, current))
        current.append(item.member())
    return [Gathered(*key, tuple(items)) for key, items in batches], strangers
