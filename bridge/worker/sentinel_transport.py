"""The workers' transport on Redis Sentinel (``sentinel://``): :mod:`bridge.worker.transport`'s
changes on kombu's Sentinel channel, which asks the Sentinels where the primary is.
:func:`bridge.worker.transport.install` makes kombu's ``sentinel`` name stand for
:class:`SentinelTransport`."""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from bridge.worker.transport import Channel, Transport


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """:class:`Channel` on kombu's Sentinel channel: its clients reach the primary the
    Sentinels name (``master_name``, ``sentinel_kwargs``)."""

    from_transport_options = (
        *kombu_redis.SentinelChannel.from_transport_options,
        "processing_lease_s",
        "multi_key_block_s",
    )

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        self._pools_made: dict[bool, Any] = {}
        super().__init__(connection, *args, **kwargs)

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        # As Channel._connparams: a channel whose connection was collected (a lost primary)
        # cannot read the Sentinels' addresses from it any more; it asks the same Sentinels
        # through the pool it made last (redis-py reconnects a disconnected pool).
        if self.connection.client is None and asynchronous in self._pools_made:
            return self._pools_made[asynchronous]
        pool = super()._sentinel_managed_pool(asynchronous)  # type: ignore[misc]
        self._pools_made[asynchronous] = pool
        return pool


class SentinelTransport(Transport, kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`SentinelChannel`, dropping what
    :class:`Transport` drops."""

    Channel = SentinelChannel
