"""Which routed queues a worker consumes, and the warning when none does.

A route whose queue no worker consumes fills it silently until backpressure pauses the route at
``max_queue_depth``. Workers on the bridge's transport (:mod:`bridge.worker.transport`) keep a
heartbeat per channel and queue key in ``_kombu.processing_index``: a processing list's name
carries the channel and the queue key, its score the channel's last heartbeat (every
``unacked_restore_interval``). A queue has a live consumer when some channel's heartbeat for it
is younger than ``celery.transport_options.processing_lease_s``, the lease after which workers
take a channel for dead. A worker without that transport (kombu's own, e.g. an app that does not
call ``bridge.worker.transport.install()``) leaves no heartbeat: it counts as no consumer, and
the warning says so.

:func:`consumers_of` and :class:`NoConsumerAlarm` are pure; :func:`read_consumers` reads Redis;
:class:`QueueWatch` is the bridge's background duty that logs the warning::

    consumed --no consumer--> missing --for grace_s--> warned (log once, then every repeat_s)
       ^                         |                        |
       +------consumer-----------+----consumer (log it)---+
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bridge.backends.redis.fetch import PROCESSING_INDEX, parse_processing
from bridge.logs import at
from bridge.routing import Route

log = logging.getLogger(__name__)

PRIORITY_SEP = "\x06\x16"  # kombu's Redis Channel.sep: queue key of a priority = queue + sep + n
CHECK_INTERVAL_S = 5.0  # how often the bridge looks
GRACE_S = 10.0  # a queue without a consumer this long is warned about (a restart is quicker)
REPEAT_S = 60.0  # while it lasts, the warning is repeated this often


def consumers_of(lists: Iterable[bytes | str], queues: Iterable[str]) -> dict[str, int]:
    """How many worker channels consume each of ``queues``, given the names of the processing
    lists with a live heartbeat (names that are not processing lists are ignored)."""
    channels: dict[str, set[str]] = {queue: set() for queue in queues}
    for name in lists:
        try:
            token, source = parse_processing(name.decode() if isinstance(name, bytes) else name)
        except (ValueError, UnicodeDecodeError):
            continue
        queue = source.split(PRIORITY_SEP, 1)[0]
        if queue in channels:
            channels[queue].add(token)
    return {queue: len(tokens) for queue, tokens in channels.items()}


def read_consumers(client: redis.Redis, queues: Iterable[str], lease_s: float) -> dict[str, int]:
    """How many worker channels on the bridge's transport consume each of ``queues`` (a
    heartbeat younger than ``lease_s`` seconds).

    :raises redis.RedisError: Redis is unreachable.
    """
    live: list[bytes] = client.zrange(  # type: ignore[assignment]  # no withscores: names
        PROCESSING_INDEX, time.time() - lease_s, "+inf", byscore=True
    )
    return consumers_of(live, queues)


def no_consumer_warning(queue: str, topics: Sequence[str], depth: int | None = None) -> str:
    """The warning about ``queue``, routed from ``topics``, which no worker consumes."""
    waiting = "" if depth is None else f" ({depth} waiting)"
    return (f"no worker on the bridge's transport consumes queue {queue}{waiting}, routed from "
            f"{', '.join(topics)}: records wait in Redis until the route pauses at "
            f"max_queue_depth; start a worker with -Q {queue} (workers without "
            f"bridge.worker.transport.install() do not count)")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Notice:
    """What to log about a queue: ``started`` (no consumer for ``for_s`` seconds), ``ongoing``
    (still none) or ``ended`` (a consumer after ``for_s`` seconds without one)."""

    kind: str
    queue: str
    for_s: float


class NoConsumerAlarm:
    """Per queue: since when it has had no consumer, and when that was last logged (pure;
    times are monotonic seconds). A queue is warned about once it has had no consumer for
    ``grace_s``, again every ``repeat_s`` while that lasts, and its end is logged once."""

    def __init__(self, *, grace_s: float = GRACE_S, repeat_s: float = REPEAT_S) -> None:
        self._grace_s, self._repeat_s = grace_s, repeat_s
        self._missing: dict[str, float] = {}  # queue -> since
        self._warned: dict[str, float] = {}  # queue -> last logged

    def update(self, consumers: Mapping[str, int], now_s: float) -> list[Notice]:
        """Take each queue's consumer count; return what to log now."""
        notices = []
        for queue, count in sorted(consumers.items()):
            since = self._missing.get(queue)
            if count:
                self._missing.pop(queue, None)
                if self._warned.pop(queue, None) is not None and since is not None:
                    notices.append(Notice("ended", queue, now_s - since))
            elif since is None:
                self._missing[queue] = now_s
            else:
                notices += self._still_missing(queue, since, now_s)
        return notices

    def _still_missing(self, queue: str, since: float, now_s: float) -> list[Notice]:
        warned = self._warned.get(queue)
        if warned is None and now_s - since >= self._grace_s:
            self._warned[queue] = now_s
            return [Notice("started", queue, now_s - since)]
        if warned is not None and now_s - warned >= self._repeat_s:
            self._warned[queue] = now_s
            return [Notice("ongoing", queue, now_s - since)]
        return []

    @property
    def warned(self) -> set[str]:
        """The queues being warned about."""
        return set(self._warned)


class QueueWatch:
    """The bridge's duty (run every :data:`CHECK_INTERVAL_S` by a background thread): read
    which routed queues have a consumer, and log :class:`NoConsumerAlarm`'s notices."""

    def __init__(self, client: redis.Redis, routes: Iterable[Route], lease_s: float) -> None:
        self._client, self._lease_s = client, lease_s
        self._topics: dict[str, list[str]] = {}
        for route in routes:
            self._topics.setdefault(route.queue, []).append(route.topic)
        self._alarm = NoConsumerAlarm()

    def check(self) -> None:
        """Look once; a Redis error is left to the bridge's outage handling (logged by it)."""
        try:
            consumers = read_consumers(self._client, self._topics, self._lease_s)
        except redis.RedisError:
            return
        for notice in self._alarm.update(consumers, time.monotonic()):
            self._log(notice)

    def _log(self, notice: Notice) -> None:
        topics = self._topics[notice.queue]
        extra: dict[str, Any] = at(topic=topics[0]) if len(topics) == 1 else {}
        if notice.kind == "ended":
            log.info("a worker on the bridge's transport consumes queue %s again, after %.0f s "
                     "without one (routed from %s)", notice.queue, notice.for_s,
                     ", ".join(topics), extra=extra)  # fmt: skip
            return
        text = no_consumer_warning(notice.queue, topics, self._depth(notice.queue))
        still = "still: " if notice.kind == "ongoing" else ""
        log.warning("%s%s (for %.0f s)", still, text, notice.for_s, extra=extra)

    def _depth(self, queue: str) -> int | None:
        try:
            return int(self._client.llen(queue))
        except redis.RedisError:
            return None
