"""The configuration file's sections (``[kafka]``, ``[celery]``, ``[retry]``, …, ``[[routes]]``):
frozen pydantic models, each validating its own keys, and the defaults they share.

:mod:`bridge.settings` puts them together (:class:`~bridge.settings.BridgeSettings`), checks
what spans sections, and loads them from the file and the environment; import them from there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.broker_url import is_sentinel_url, parse_sentinels
from bridge.credentials import mask_url, secrets_from_files, with_credentials

LEASE_S = 60.0  # default processing_lease_s: a channel silent this long is taken for dead

ValueFormat = Literal["json", "text", "bytes"]
OnExhausted = Literal["dead-letter", "park"]
SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
VALUE_FORMATS: tuple[ValueFormat, ...] = ("json", "text", "bytes")
REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server (``redis://``, ``rediss://`` or ``unix://``) or the
    Sentinels of one (``sentinel://``)."""
    return "://" in url and url.partition("://")[0].lower() in REDIS_SCHEMES


MAX_QUEUE_DEPTH = 10_000  # default max_queue_depth: messages in a route's Celery queue
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """How the bridge (and the workers' dead-letter producer) reach Kafka.

    ``security_protocol`` SASL_* needs ``sasl_mechanism``, ``sasl_username`` and a password
    (``sasl_password``, or ``sasl_password_file``: a file holding it, read at load). SSL and
    SASL_SSL verify the broker against ``ssl_cafile`` (default: the system's CAs);
    ``ssl_certfile``/``ssl_keyfile`` (with ``ssl_password`` or ``ssl_password_file``) present a
    client certificate. Passwords are ``SecretStr``: masked in every repr.
    """

    bootstrap_servers: str = Field(min_length=1)
    group_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    client_id: str = "kafka-celery-bridge"
    group_instance_id: str | None = Field(default=None, min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: int = Field(default=500, ge=1)
    poll_timeout_ms: int = Field(default=200, ge=1)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    shutdown_timeout_ms: int = Field(default=10_000, ge=100)
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_password_file: Path | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="before")
    @classmethod
    def _passwords_from_files(cls, data: Any) -> Any:
        return secrets_from_files(data, ("sasl_password", "ssl_password"))

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        sasl = {"sasl_mechanism": self.sasl_mechanism, "sasl_username": self.sasl_username,
                "sasl_password": self.sasl_password}  # fmt: skip
        if not self.security_protocol.startswith("SASL_"):
            given = [key for key, value in sasl.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} need security_protocol SASL_PLAINTEXT "
                                 f"or SASL_SSL (got {self.security_protocol})")  # fmt: skip
            return self
        missing = [key for key, value in sasl.items() if value is None]
        if missing:
            raise ValueError(f"security_protocol {self.security_protocol} needs "
                             f"{' and '.join(missing)}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> KafkaSettings:
        tls = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile,
               "ssl_keyfile": self.ssl_keyfile, "ssl_password": self.ssl_password}  # fmt: skip
        given = [key for key, value in tls.items() if value is not None]
        if given and self.security_protocol not in ("SSL", "SASL_SSL"):
            raise ValueError(f"{', '.join(given)} need security_protocol SSL or SASL_SSL "
                             f"(got {self.security_protocol})")  # fmt: skip
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (a client certificate)")
        return self


class CelerySettings(_Section):
    """The Celery broker the bridge publishes to and the workers consume from.

    ``broker_username`` and ``broker_password`` (or ``broker_password_file``, read at load) are
    put into ``broker_url``, which every Redis client of the bridge, the workers and Celery
    itself is built from. Show the URL only through ``bridge.credentials.mask_url``.

    A Sentinel ``broker_url`` (``sentinel://:pw@s1:26379/0;sentinel://s2:26379/0``, as kombu
    reads it) needs ``transport_options.master_name``; ``sentinel_password`` (or
    ``sentinel_password_file``) is the Sentinels' own password, the URL's is the primary's.
    """

    broker_url: str = Field(min_length=1, repr=False)
    broker_username: str | None = Field(default=None, min_length=1)
    broker_password: SecretStr | None = None
    broker_password_file: Path | None = None
    sentinel_password: SecretStr | None = None
    sentinel_password_file: Path | None = None
    publish_retry_backoff_ms: int = Field(default=100, ge=1)
    publish_retry_backoff_max_ms: int = Field(default=10_000, ge=1)
    enqueue_dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    visibility_timeout_s: int = Field(default=3600, ge=1)
    # More Redis transport options for the workers: kombu's (e.g. unacked_restore_interval)
    # and bridge.worker.transport's (processing_lease_s, multi_key_block_s).
    transport_options: dict[str, int | float | str | bool] = Field(default_factory=dict)

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


class RetrySettings(_Section):
    """Where delayed retries wait.

    A retry delayed by ``redis_schedule_min_delay_ms`` or more waits in a Redis sorted set
    (not in a worker's memory) and is moved to its queue when due by the bridge; shorter
    delays stay plain Celery countdowns, which must stay well below the broker's visibility
    timeout or Redis delivers them again and again.
    """

    redis_schedule_min_delay_ms: int = Field(default=1000, ge=0)
    scheduler_interval_ms: int = Field(default=100, ge=1)


class OrderingSettings(_Section):
    """Ordered routes: when a key's head is presumed lost, and how often that is checked.

    A head whose task has shown no sign of life (published, started, retry scheduled) for
    ``stall_timeout_s`` is published again, so a lost message never stalls its key for good.
    Celery itself redelivers unacknowledged messages after the visibility timeout, so the
    stall timeout must be longer (default: twice the visibility timeout); a task that runs
    longer than it is presumed lost.
    """

    stall_timeout_s: int | None = Field(default=None, ge=1)
    watchdog_interval_ms: int = Field(default=1_000, ge=1)


class SendRetrySettings(_Section):
    """A producer's own retries on retryable Kafka errors (defaults after the producer seed).

    ``delivery_timeout_ms`` bounds one attempt, connecting and waiting for metadata included.
    """

    retries: int = Field(default=3, ge=0)
    retry_backoff_ms: int = Field(default=100, ge=1)
    retry_backoff_max_ms: int = Field(default=1_000, ge=1)
    delivery_timeout_ms: int = Field(default=10_000, ge=1_000)


class DeadLetterSettings(SendRetrySettings):
    """The dead-letter producer's own retries."""


class ProduceSettings(SendRetrySettings):
    """The retries of ``bridge.produce`` (records that applications write to Kafka)."""


class MetricsSettings(_Section):
    """Prometheus ``/metrics`` endpoints: the bridge's (``port``) and one per Celery worker
    (``worker_port``, served by the worker's main process for all its pool processes).

    A port of 0 turns the endpoint off (the default). ``addr`` is the address to listen on:
    every interface by default, so that a Prometheus server elsewhere can scrape it.
    ``redis_interval_s`` is how often at most a scrape of the bridge reads the group's counts
    in Redis (delayed retries, dead letters, ordered keys); scrapes in between get the last.
    """

    port: int = Field(default=0, ge=0, le=65_535)
    addr: str = Field(default="0.0.0.0", min_length=1)
    worker_port: int = Field(default=0, ge=0, le=65_535)
    worker_addr: str = Field(default="0.0.0.0", min_length=1)
    redis_interval_s: float = Field(default=5.0, gt=0)


class BreakerSettings(_Section):
    """The dead-letter flood breaker (off unless ``dead_letter_ratio`` is set).

    Per route: when more than ``dead_letter_ratio`` of the records that finished in the last
    ``window_s`` (at least ``min_records`` of them) were dead-lettered, consumption of the route
    pauses. After ``cool_down_s`` a probe lets ``probe_records`` records through; if no more
    than the ratio of them is dead-lettered the route resumes, else it pauses again.
    ``check_interval_ms`` is how often the bridge reads the counts in Redis.
    """

    dead_letter_ratio: float | None = Field(default=None, gt=0, lt=1)
    window_s: int = Field(default=60, ge=1, le=3600)
    min_records: int = Field(default=20, ge=1)
    cool_down_s: float = Field(default=30.0, gt=0)
    probe_records: int = Field(default=10, ge=1)
    check_interval_ms: int = Field(default=1_000, ge=10)


class RouteSettings(_Section):
    """One Kafka topic handed to one Celery task."""

    topic: str
    task: str = Field(min_length=1)
    queue: str = Field(default="celery", min_length=1)
    ordered: bool = False
    value_format: ValueFormat = "json"
    dlt_topic: str | None = None
    # Backpressure: pause the route at this Celery queue depth (Kafka stays the buffer, also
    # when no worker consumes the queue), resume at resume_queue_depth (default: half of it).
    max_queue_depth: int = Field(default=MAX_QUEUE_DEPTH, ge=1)
    resume_queue_depth: int | None = Field(default=None, ge=0)
    # Retry defaults for the route's records; a task's own options win over these.
    max_retries: int | None = Field(default=None, ge=0)
    retry_backoff_s: int | None = Field(default=None, ge=1)
    retry_backoff_max_s: int | None = Field(default=None, ge=1)
    retry_jitter: bool | None = None
    retry_interval_s: float | None = Field(default=None, gt=0)
    # Ordered routes: what an exhausted head does to its key, and how much may wait.
    on_exhausted: OnExhausted = "dead-letter"
    max_waiting_per_key: int = Field(default=10_000, ge=1)
    max_waiting_per_partition: int = Field(default=100_000, ge=1)

    @field_validator("topic", "dlt_topic")
    @classmethod
    def _valid_topic(cls, name: str | None) -> str | None:
        if name is not None and not _TOPIC_RE.match(name):
            raise ValueError(f"{name!r} is not a valid Kafka topic name")
        return name

    @model_validator(mode="after")
    def _one_retry_delay(self) -> RouteSettings:
        if self.retry_interval_s is not None and self.retry_backoff_s is not None:
            raise ValueError("retry_interval_s (fixed) and retry_backoff_s (exponential) exclude "
                             "each other")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _park_needs_order(self) -> RouteSettings:
        if self.on_exhausted == "park" and not self.ordered:
            raise ValueError("on_exhausted = 'park' stops a key: it needs ordered = true")
        return self

    @model_validator(mode="after")
    def _resume_below_max(self) -> RouteSettings:
        if self.resume_queue_depth is not None and self.resume_queue_depth >= self.max_queue_depth:
            raise ValueError(f"resume_queue_depth needs a larger max_queue_depth (default "
                             f"{MAX_QUEUE_DEPTH})")  # fmt: skip
        return self

    @property
    def resume_depth(self) -> int:
        """Depth at which a held route resumes: ``resume_queue_depth``, else half the max."""
        if self.resume_queue_depth is not None:
            return self.resume_queue_depth
        return self.max_queue_depth // 2

    def dead_letter_topic(self, group_id: str) -> str:
        """The route's DLT: ``dlt_topic`` if set, else ``{topic}.{group_id}.dlt``."""
        return self.dlt_topic or f"{self.topic}.{group_id}.dlt"
