"""The bridge's clients of the broker's Redis, made in one place for every URL form.

``redis://``, ``rediss://`` and ``unix://`` give a plain client of that server. A Sentinel URL
(:mod:`bridge.broker_url`) gives a client of the primary the Sentinels name: a connection
asks them where the primary is when it connects, and drops a connection to a primary that
went away or was demoted, so the next command reaches the new primary after a failover
without a restart (redis-py's ``Sentinel.master_for``). A Lua script registered on such a
client is loaded again on the new primary by redis-py's ``Script`` (on ``NOSCRIPT``).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

from bridge.broker_url import is_sentinel_url, parse_sentinels
from bridge.settings import CelerySettings


def broker_client(celery: CelerySettings, **options: Any) -> redis.Redis:
    """A client of the broker's Redis (its primary, for Sentinels).

    :param options: redis-py's connection options, e.g. ``socket_timeout=5`` (s),
        ``socket_connect_timeout``, ``retry``; for Sentinels they apply to the primary's
        connections, and the ``socket_*`` ones and ``retry`` to the Sentinels' too.
    """
    url = celery.broker_url
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    found = parse_sentinels(url)
    # The Sentinels are asked with the same timeouts and retries (none: fail fast) as the primary.
    sentinel_kwargs = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
    sentinel_kwargs.update(celery.sentinel_options().get("sentinel_kwargs", {}))
    sentinels = Sentinel(
        list(found.hosts),
        min_other_sentinels=int(celery.transport_options.get("min_other_sentinels", 0)),
        sentinel_kwargs=sentinel_kwargs,
        **options,
    )
    master_name = str(celery.transport_options["master_name"])
    client: redis.Redis = sentinels.master_for(
        master_name, db=found.db, username=found.username, password=found.password
    )
    return client


def connected_replicas(client: redis.Redis) -> int:
    """How many replicas are connected to the server ``client`` reaches (``INFO replication``).

    :raises redis.RedisError: Redis is unreachable.
    """
    return int(client.info("replication").get("connected_slaves", 0))


def primary_address(client: redis.Redis) -> str | None:
    """The primary a Sentinel client reaches now (``host:port``, as the Sentinels name it);
    ``None`` for a client of one server.

    :raises redis.RedisError: no Sentinel answers, or none knows a primary.
    """
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
    return f"{host}:{port}"


def sentinels_of(client: redis.Redis) -> list[tuple[str, redis.Redis]]:
    """The Sentinels a Sentinel client asks (``host:port`` and a client of each); none for a
    client of one server."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return []
    found = []
    for sentinel in pool.sentinel_manager.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        found.append((f"{kwargs['host']}:{kwargs['port']}", sentinel))
    return found
