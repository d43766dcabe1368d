"""Operators' action on routes paused by the dead-letter flood breaker: ask every bridge of the
group to close their breakers (a request in Redis, :mod:`bridge.backends.redis.outcomes`),
which they apply within ``breaker.check_interval_ms``. ``python -m bridge resume`` and the
console both call :func:`resume`."""

from __future__ import annotations

import time
from collections.abc import Iterable

from bridge.backends.redis.client import broker_client
from bridge.backends.redis.outcomes import request_resume
from bridge.settings import BridgeSettings


def breaker_on(settings: BridgeSettings) -> bool:
    """Whether the flood breaker is configured (``breaker.dead_letter_ratio``): without it,
    there is nothing to resume."""
    return settings.breaker.dead_letter_ratio is not None


def resume(settings: BridgeSettings, topics: Iterable[str]) -> list[str]:
    """Ask every bridge of the group to close the breakers of ``topics``; the topics asked for
    (none when the breaker is off).

    :raises redis.RedisError: Redis is unreachable.
    """
    asked = list(topics)
    if not breaker_on(settings) or not asked:
        return []
    client = broker_client(settings.celery, socket_timeout=5)
    try:
        request_resume(client, settings.kafka.group_id, asked, time.time())
    finally:
        client.close()
    return asked
