"""Configuration: one TOML file plus ``BRIDGE_*`` environment overrides, validated by pydantic.

The file is found by an explicit path (``--config``) or the ``BRIDGE_CONFIG`` environment
variable. Any key can be overridden from the environment with ``__`` between levels, for
example ``BRIDGE_KAFKA__BOOTSTRAP_SERVERS=broker:9092``; the environment wins over the file.

This module owns the whole (:class:`BridgeSettings`: the sections together, the checks that
span sections, the environment's precedence) and loading it (:func:`load_settings`, with
errors that name each offending key). The sections themselves are :mod:`bridge.sections`
(one module per part, each key with its description); every name of both is imported from here.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.errors import ConfigError
from bridge.sections import (
    LEASE_S,
    MAX_QUEUE_DEPTH,
    REDIS_SCHEMES,
    VALUE_FORMATS,
    BreakerSettings,
    CelerySettings,
    DeadLetterSettings,
    KafkaSettings,
    MetricsSettings,
    OnExhausted,
    OrderingSettings,
    ProduceSettings,
    RetrySettings,
    RouteSettings,
    SaslMechanism,
    SecurityProtocol,
    SendRetrySettings,
    ValueFormat,
    is_redis_url,
)

__all__ = [
    "CONFIG_ENV",
    "LEASE_S",
    "MAX_QUEUE_DEPTH",
    "REDIS_SCHEMES",
    "VALUE_FORMATS",
    "BreakerSettings",
    "BridgeSettings",
    "CelerySettings",
    "DeadLetterSettings",
    "KafkaSettings",
    "MetricsSettings",
    "OnExhausted",
    "OrderingSettings",
    "ProduceSettings",
    "RetrySettings",
    "RouteSettings",
    "SaslMechanism",
    "SecurityProtocol",
    "SendRetrySettings",
    "ValueFormat",
    "is_redis_url",
    "load_settings",
]

CONFIG_ENV = "BRIDGE_CONFIG"


class BridgeSettings(BaseSettings):
    """The whole configuration; frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings
    celery: CelerySettings
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    produce: ProduceSettings = ProduceSettings()
    retry: RetrySettings = RetrySettings()
    ordering: OrderingSettings = OrderingSettings()
    metrics: MetricsSettings = MetricsSettings()
    breaker: BreakerSettings = BreakerSettings()
    routes: list[RouteSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _countdowns_below_visibility_timeout(self) -> BridgeSettings:
        limit_ms = self.celery.visibility_timeout_s * 1000
        if self.retry.redis_schedule_min_delay_ms * 2 > limit_ms:
            raise ValueError(
                f"retry.redis_schedule_min_delay_ms ({self.retry.redis_schedule_min_delay_ms}) "
                f"must be at most half of celery.visibility_timeout_s "
                f"({self.celery.visibility_timeout_s} s): shorter retries stay Celery "
                f"countdowns, and Redis delivers a countdown that outlives the visibility "
                f"timeout again and again"
            )
        return self

    @model_validator(mode="after")
    def _stall_after_visibility_timeout(self) -> BridgeSettings:
        stall_s = self.ordering.stall_timeout_s
        if stall_s is not None and stall_s <= self.celery.visibility_timeout_s:
            raise ValueError(
                f"ordering.stall_timeout_s ({stall_s}) must exceed celery.visibility_timeout_s "
                f"({self.celery.visibility_timeout_s} s): before that, Celery itself delivers "
                f"an unacknowledged head again"
            )
        return self

    @property
    def stall_timeout_ms(self) -> int:
        """How long an ordered key's head may show no sign of life (ms)."""
        stall_s = self.ordering.stall_timeout_s or 2 * self.celery.visibility_timeout_s
        return stall_s * 1000

    @field_validator("routes")
    @classmethod
    def _one_route_per_topic(cls, routes: list[RouteSettings]) -> list[RouteSettings]:
        seen: set[str] = set()
        for route in routes:
            if route.topic in seen:
                raise ValueError(f"topic {route.topic!r} is routed twice")
            seen.add(route.topic)
        return routes

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which arrives as init arguments.
        return (env_settings, init_settings)


def load_settings(path: str | os.PathLike[str] | None = None) -> BridgeSettings:
    """Load and validate the configuration.

    :param path: the TOML file; ``None`` means the ``BRIDGE_CONFIG`` environment variable.
    :raises ConfigError: the file is missing or unreadable, or a key is unknown or invalid
        (the message names every offending key).
    """
    source = _config_path(path)
    data = _read_toml(source)
    try:
        return BridgeSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _config_path(path: str | os.PathLike[str] | None) -> Path:
    raw = path if path is not None else os.environ.get(CONFIG_ENV)
    if not raw:
        raise ConfigError(f"no configuration file: pass --config PATH or set {CONFIG_ENV}")
    return Path(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None


def _describe(exc: ValidationError, source: Path) -> str:
    lines = [f"invalid configuration in {source}:"]
    for error in exc.errors():
        key = _key_name(error["loc"])
        lines.append(f"  {key}: {error['msg']}")
    return "\n".join(lines)


def _key_name(loc: tuple[int | str, ...]) -> str:
    """``("routes", 0, "topic")`` -> ``routes[0].topic``."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "(top level)"
