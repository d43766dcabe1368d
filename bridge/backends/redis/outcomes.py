"""Counts of finished records per route and second in Redis, and ``resume`` requests: what the
dead-letter flood breaker reads (Redis I/O; the arithmetic is in :func:`tally`).

Workers count a record when its task succeeds or it is dead-lettered; the bridge counts the
undecodable records it dead-letters itself. Each route has one hash (:func:`bridge.keys.outcomes`)
whose fields are per second, so a reading is one ``HGETALL``; the bridge deletes the fields
older than its window, and the hash expires when nothing is counted for two windows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import redis

from bridge import keys
from bridge.breaker import Outcomes
from bridge.logs import at

log = logging.getLogger(__name__)


def count(
    client: redis.Redis, group_id: str, topic: str, *, dead: bool, window_s: int, now_s: float
) -> bool:
    """Count one finished record of ``topic``: handled, or ``dead`` (dead-lettered).

    An outage of Redis costs the count (logged), never the caller's work.

    :param window_s: the breaker's window; the hash lives at least twice that long.
    :returns: whether it was counted.
    """
    key = keys.outcomes(group_id, topic)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, f"{'d' if dead else 'h'}:{int(now_s)}", 1)
    pipe.expire(key, 2 * window_s)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("%s: an outcome not counted for the flood breaker: %s", topic, exc,
                    extra=at(topic=topic))  # fmt: skip
        return False
    return True


def tally(fields: Mapping[bytes, bytes], since_s: float) -> Outcomes:
    """The outcomes counted in the seconds from ``since_s`` on (its own second included)."""
    first = int(since_s)
    handled = dead = 0
    for name, value in fields.items():
        kind, _, second = name.partition(b":")
        if int(second) >= first:
            if kind == b"h":
                handled += int(value)
            elif kind == b"d":
                dead += int(value)
    return Outcomes(handled, dead)


def stale_fields(fields: Iterable[bytes], before_s: float) -> list[bytes]:
    """The fields of seconds before ``before_s``: no window reads them any more."""
    last = int(before_s)
    return [name for name in fields if int(name.partition(b":")[2]) < last]


class OutcomeReader:
    """The bridge's reader of one group's counts and ``resume`` requests.

    :param client: the Celery broker's Redis.
    :param group_id: the consumer group.
    """

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._group_id = group_id

    def read(self, since_s: Mapping[str, float], keep_s: float) -> dict[str, Outcomes]:
        """Each topic's outcomes from its ``since_s`` on; drop fields older than ``keep_s``.

        :raises redis.RedisError: Redis is unreachable.
        """
        topics = list(since_s)
        pipe = self._client.pipeline(transaction=False)
        for topic in topics:
            pipe.hgetall(keys.outcomes(self._group_id, topic))
        readings: list[dict[bytes, bytes]] = pipe.execute()
        for topic, fields in zip(topics, readings, strict=True):
            stale = stale_fields(fields, keep_s)
            if stale:
                self._client.hdel(keys.outcomes(self._group_id, topic), *stale)
        return {t: tally(f, since_s[t]) for t, f in zip(topics, readings, strict=True)}

    def resumes(self) -> dict[str, float]:
        """The ``resume`` requests: topic -> when asked (seconds since the epoch).

        :raises redis.RedisError: Redis is unreachable.
        """
        raw = self._client.hgetall(keys.breaker_resumes(self._group_id))
        return {_text(k): int(v) / 1000 for k, v in raw.items()}


def request_resume(client: redis.Redis, group_id: str, topics: Iterable[str], now_s: float) -> None:
    """Ask every bridge of ``group_id`` to close the breakers of ``topics`` (``resume``).

    :raises redis.RedisError: Redis is unreachable.
    """
    pipe = client.pipeline(transaction=False)
    for topic in topics:
        pipe.hset(keys.breaker_resumes(group_id), topic, int(now_s * 1000))
    pipe.execute()


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name
