"""Operators' action on paused routes: lift an operator's pause (:mod:`bridge.ops.pause`),
which every bridge applies within a second, and ask every bridge of the group to close the
routes' dead-letter flood breakers (a request in Redis, :mod:`bridge.backends.redis.outcomes`),
which they apply within ``breaker.check_interval_ms``. ``python -m bridge resume`` and the
console both call :func:`resume`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.backends.redis import route_pauses
from bridge.backends.redis.client import broker_client
from bridge.backends.redis.outcomes import request_resume
from bridge.settings import BridgeSettings


def breaker_on(settings: BridgeSettings) -> bool:
    """Whether the flood breaker is configured (``breaker.dead_letter_ratio``): without it,
    there is nothing to resume."""
    return settings.breaker.dead_letter_ratio is not None


@dataclass(frozen=True, slots=True)
class Resumed:
    """What ``resume`` did: the topics whose operator's pause it lifted, and those whose
    breakers it asked to close (none when the breaker is off)."""

    unpaused: list[str]
    breakers: list[str]


def resume(settings: BridgeSettings, topics: Iterable[str]) -> Resumed:
    """Lift operators' pauses of ``topics`` and ask every bridge of the group to close their
    breakers.

    :raises redis.RedisError: Redis is unreachable.
    """
    asked = list(topics)
    client = broker_client(settings.celery, socket_timeout=5)
    try:
        unpaused = route_pauses.unpause(client, settings.kafka.group_id, asked)
        breakers = asked if breaker_on(settings) and asked else []
        if breakers:
            request_resume(client, settings.kafka.group_id, breakers, time.time())
    finally:
        client.close()
    return Resumed(unpaused, breakers)
