"""The section that faces the Celery broker (``[celery]``): the Redis server the bridge
publishes to and keeps its state in, and what the workers' transport takes from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.broker_url import is_sentinel_url, parse_sentinels
from bridge.credentials import mask_url, secrets_from_files, with_credentials
from bridge.sections.base import Section

LEASE_S = 60.0  # default processing_lease_s: a channel silent this long is taken for dead
REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server (``redis://``, ``rediss://`` or ``unix://``) or the
    Sentinels of one (``sentinel://``)."""
    return "://" in url and url.partition("://")[0].lower() in REDIS_SCHEMES


class CelerySettings(Section):
    """The Celery broker the bridge publishes to and the workers consume from.

    ``broker_username`` and ``broker_password`` (or ``broker_password_file``, read at load) are
    put into ``broker_url``, which every Redis client of the bridge, the workers and Celery
    itself is built from. Show the URL only through ``bridge.credentials.mask_url``.

    A Sentinel ``broker_url`` (``sentinel://:pw@s1:26379/0;sentinel://s2:26379/0``, as kombu
    reads it) needs ``transport_options.master_name``; ``sentinel_password`` (or
    ``sentinel_password_file``) is the Sentinels' own password, the URL's is the primary's.
    """

    broker_url: str = Field(
        min_length=1,
        repr=False,
        description="The Celery broker: `redis://`, `rediss://` or `unix://`, or Sentinels as "
        "kombu reads them (`sentinel://:pw@s1:26379/0;sentinel://s2:26379/0`, with "
        "`transport_options.master_name`; the URL's password is the primary's). The bridge "
        "publishes there and keeps its state there; workers take it from here "
        "(`bridge.configure(app)`).",
    )
    broker_username: str | None = Field(
        default=None,
        min_length=1,
        description="A Redis 6+ ACL user, put into the broker URL (without it: the default user).",
    )
    broker_password: SecretStr | None = Field(
        default=None,
        description="The Redis password, put into the broker URL (or `broker_password_file`, "
        "or the environment).",
    )
    broker_password_file: Path | None = Field(
        default=None, description="A file holding the Redis password, read at start."
    )
    sentinel_password: SecretStr | None = Field(
        default=None,
        description="The Sentinels' own password (a `sentinel://` broker URL only; or "
        "`sentinel_password_file`, or the environment).",
    )
    sentinel_password_file: Path | None = Field(
        default=None, description="A file holding the Sentinels' password, read at start."
    )
    publish_retry_backoff_ms: int = Field(
        default=100,
        ge=1,
        description="The bridge's first backoff while the broker is unreachable...",
    )
    publish_retry_backoff_max_ms: int = Field(
        default=10_000, ge=1, description="...doubling up to this cap."
    )
    enqueue_dedup_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long a partition's published watermark (the exactly-once enqueue) lives.",
    )
    min_replicas_to_accept: int = Field(
        default=0,
        ge=0,
        description="Replicas (Redis `WAIT`) that must acknowledge each enqueued batch before "
        "it counts as accepted and its Kafka offsets are committed; fewer within "
        "`replica_ack_timeout_ms` is a failed enqueue (rewound, backed off, retried). 0: no "
        "`WAIT`, a batch is accepted once the primary ran it.",
    )
    replica_ack_timeout_ms: int = Field(
        default=1000,
        ge=1,
        le=60_000,
        description="How long each batch waits for `min_replicas_to_accept` replicas (ms): far "
        "above a healthy replica's lag (sub-millisecond on a LAN), far below a Sentinel's "
        "failover; the bridge's publisher thread blocks this long per batch while a replica "
        "is missing.",
    )
    argsrepr_value_bytes: int = Field(
        default=64,
        ge=0,
        le=4096,
        description="How many bytes of a record's value its task messages show in Flower (their "
        "`argsrepr`, next to topic, partition, offset and key); 0 shows no value (values "
        "with personal data). The record itself travels whole either way.",
    )
    visibility_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="The broker's visibility timeout; the workers get it from here too. Keep "
        "it above the longest task, dead-letter write included.",
    )
    # The workers' transport (bridge.worker.transport) reads processing_lease_s and
    # multi_key_block_s; kombu's Redis transport the others.
    transport_options: dict[str, int | float | str | bool] = Field(
        default_factory=dict,
        description="More Redis transport options for the workers: kombu's (e.g. "
        "`unacked_restore_interval`, s between sweeps, also the workers' heartbeat) and the "
        "workers' transport's: `processing_lease_s` (default 60: a worker silent this long, "
        "what it fetched goes back to its queue; at least 3 times `unacked_restore_interval`) "
        "and `multi_key_block_s` (default 0.1: a worker on several queues, idle, waits this "
        "long per queue); `master_name` (required with a `sentinel://` broker URL: the name "
        "the Sentinels monitor the primary under). `visibility_timeout` and `global_keyprefix` "
        "are refused.",
    )

    @field_validator("broker_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if not is_redis_url(url):
            shown = mask_url(url)
            raise ValueError(f"{shown!r} is not a Redis URL: the bridge publishes to Redis and "
                             f"keeps its state there; use "
                             f"{', '.join(s + '://' for s in REDIS_SCHEMES)}")  # fmt: skip
        if is_sentinel_url(url):
            parse_sentinels(url)  # raises ValueError, which names what is wrong
        return url

    @field_validator("transport_options")
    @classmethod
    def _transport_options_the_bridge_can_keep(
        cls, options: dict[str, int | float | str | bool]
    ) -> dict[str, int | float | str | bool]:
        if "visibility_timeout" in options:
            raise ValueError("set celery.visibility_timeout_s instead of visibility_timeout here")
        if "global_keyprefix" in options:
            raise ValueError("global_keyprefix is not supported: the bridge publishes and keeps "
                             "its state under unprefixed keys")  # fmt: skip
        lease_s = options.get("processing_lease_s", LEASE_S)
        interval_s = options.get("unacked_restore_interval", 10)
        if not isinstance(lease_s, int | float) or not isinstance(interval_s, int | float):
            raise ValueError("processing_lease_s and unacked_restore_interval are seconds")
        if lease_s < 3 * interval_s:
            raise ValueError(f"processing_lease_s ({lease_s}) must be at least 3 times "
                             f"unacked_restore_interval ({interval_s} s), the workers' heartbeat "
                             f"interval: a shorter lease restores messages live workers are "
                             f"receiving")  # fmt: skip
        return options

    @model_validator(mode="after")
    def _sentinel_complete(self) -> CelerySettings:
        if not is_sentinel_url(self.broker_url):
            if self.sentinel_password is not None:
                raise ValueError("sentinel_password needs a sentinel:// broker_url")
            return self
        master_name = self.transport_options.get("master_name")
        if not isinstance(master_name, str) or not master_name:
            raise ValueError("a sentinel:// broker_url needs transport_options.master_name: the "
                             "name the Sentinels monitor the primary under")  # fmt: skip
        return self

    def sentinel_options(self) -> dict[str, Any]:
        """The kombu transport options of a Sentinel broker (``master_name`` and the Sentinels'
        password as ``sentinel_kwargs``); empty for one Redis server."""
        if not is_sentinel_url(self.broker_url):
            return {}
        options: dict[str, Any] = {"master_name": self.transport_options["master_name"]}
        if self.sentinel_password is not None:
            options["sentinel_kwargs"] = {"password": self.sentinel_password.get_secret_value()}
        return options

    @property
    def processing_lease_s(self) -> float:
        """How long a worker's heartbeat may be missing before it counts as gone (s)."""
        return float(self.transport_options.get("processing_lease_s", LEASE_S))

    @model_validator(mode="before")
    @classmethod
    def _credentials_into_url(cls, data: Any) -> Any:
        data = secrets_from_files(data, ("broker_password", "sentinel_password"))
        if not isinstance(data, dict) or not isinstance(data.get("broker_url"), str):
            return data  # pydantic reports the missing or mistyped key itself
        username, password = data.get("broker_username"), data.get("broker_password")
        if isinstance(password, SecretStr):
            password = password.get_secret_value()
        if not isinstance(username, str | None) or not isinstance(password, str | None):
            return data  # pydantic reports the mistyped key itself
        return {**data, "broker_url": with_credentials(data["broker_url"], username, password)}
