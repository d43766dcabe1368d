"""Operators' pause of routes: every bridge of the group stops consuming the routes' topics
(their partitions paused, reason ``operator``) within a second, until ``resume``. What is
already in Celery goes on: queued tasks, retries, ordered keys' next records.
``python -m bridge pause`` and the console both call :func:`pause`."""

from __future__ import annotations

from collections.abc import Iterable

from bridge.backends.redis import route_pauses
from bridge.backends.redis.client import broker_client
from bridge.deadletter import utc_now_iso
from bridge.settings import BridgeSettings


def pause(settings: BridgeSettings, topics: Iterable[str], *, by: str, why: str) -> list[str]:
    """Pause ``topics`` for every bridge of the group; the topics newly paused (one already
    paused keeps who paused it first).

    :raises redis.RedisError: Redis is unreachable.
    """
    client = broker_client(settings.celery, socket_timeout=5)
    try:
        return route_pauses.pause(
            client, settings.kafka.group_id, topics, by=by, why=why, at=utc_now_iso()
        )
    finally:
        client.close()
