"""The console's audit log (Redis I/O): every action, who ran it, when, on what and how many
records or partitions it touched, newest first, in the Redis list
``bridge:{group_id}:console:audit`` (:func:`bridge.keys.console_audit`). Redis keeps it with
AOF on, as it keeps the bridge's own state; the newest :data:`KEEP` entries are kept. It also
keeps which dead letters the console replayed (:meth:`AuditLog.claim`), so that a form sent
twice replays nothing twice."""

from __future__ import annotations

import json
from typing import Any

from bridge import keys
from bridge.backends.redis.client import broker_client
from bridge.settings import BridgeSettings

KEEP = 10_000


class AuditLog:
    """Appends to and reads the group's audit log."""

    def __init__(self, settings: BridgeSettings) -> None:
        self._client = broker_client(settings.celery, socket_timeout=5)
        self._key = keys.console_audit(settings.kafka.group_id)
        self._replayed = keys.console_replayed(settings.kafka.group_id)

    def record(self, entry: dict[str, Any]) -> None:
        """Add ``entry`` (JSON-safe) as the newest.

        :raises redis.RedisError: Redis is unreachable (the action is then not run).
        """
        with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(self._key, json.dumps(entry, sort_keys=True))
            pipe.ltrim(self._key, 0, KEEP - 1)
            pipe.execute()

    def recent(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest ``count`` entries, newest first."""
        return [json.loads(raw) for raw in self._client.lrange(self._key, 0, count - 1)]

    def claim(self, dlt: str, places: list[str]) -> list[str]:
        """Of the dead letters at ``places`` (``partition:offset``) of ``dlt``, those never
        claimed before (now claimed): the console replays each dead letter once."""
        with self._client.pipeline(transaction=False) as pipe:
            for place in places:
                pipe.sadd(self._replayed, f"{dlt}:{place}")
            added = pipe.execute()
        return [place for place, new in zip(places, added, strict=True) if new]

    def close(self) -> None:
        """Close the Redis connections."""
        self._client.close()
