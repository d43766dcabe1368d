"""What each running bridge reports about itself in Redis, so ``status`` can show which bridge
owns a partition and why a partition is paused (Redis I/O).

Each bridge writes its :class:`~bridge.hooks.LoopState` about once a second under
``bridge:{group_id}:members:{member}`` with a short expiry: a bridge that stops or dies
disappears from ``status`` within :data:`TTL_S` seconds.
"""

from __future__ import annotations

import json
import logging

import redis

from bridge import keys
from bridge.backends.redis.client import broker_client
from bridge.hooks import BridgeHooks, LoopState
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

TTL_S = 10


class MemberReporter(BridgeHooks):
    """Writes the bridge's state to Redis (a hook). Skipped while the broker is down, and a
    Redis error only logs at DEBUG: the bridge's own outage handling reports it."""

    def __init__(self, client: redis.Redis, group_id: str) -> None:
        self._client = client
        self._group_id = group_id
        self._key: str | None = None

    def after_state(self, state: LoopState) -> None:
        if state.broker_down:
            return
        self._key = keys.member(self._group_id, state.member)
        try:
            self._client.set(self._key, json.dumps(state.to_dict()), ex=TTL_S)
        except redis.RedisError as exc:
            log.debug("state of %s not reported: %r", state.member, exc)

    def on_stop(self) -> None:
        try:
            if self._key is not None:
                self._client.delete(self._key)
        except redis.RedisError as exc:
            log.debug("state of a stopped bridge not removed: %r", exc)
        finally:
            self._client.close()


def member_reporter(settings: BridgeSettings) -> MemberReporter:
    """The reporter of a bridge run with ``settings``, on a Redis client of its own with short
    timeouts: reporting must not hold the loop up."""
    client = broker_client(settings.celery, socket_connect_timeout=0.5, socket_timeout=0.5)
    return MemberReporter(client, settings.kafka.group_id)


def read_members(client: redis.Redis, group_id: str) -> list[LoopState]:
    """The states the group's running bridges reported, by member name.

    :raises redis.RedisError: Redis is unreachable.
    """
    names = sorted(client.scan_iter(match=keys.members_pattern(group_id), count=100))
    values = client.mget(names) if names else []
    states = [LoopState.from_dict(json.loads(v)) for v in values if v is not None]
    return sorted(states, key=lambda s: s.member)
