"""The sections of the bridge's background duties: where delayed retries wait and how often
the bridge moves them (``[retry]``), when an ordered key's head is presumed lost
(``[ordering]``), and the dead-letter flood breaker (``[breaker]``)."""

from __future__ import annotations

from pydantic import Field

from bridge.sections.base import Section


class RetrySettings(Section):
    """Where delayed retries wait.

    A retry delayed by ``redis_schedule_min_delay_ms`` or more waits in a Redis sorted set
    (not in a worker's memory) and is moved to its queue when due by the bridge; shorter
    delays stay plain Celery countdowns, which must stay well below the broker's visibility
    timeout or Redis delivers them again and again.
    """

    redis_schedule_min_delay_ms: int = Field(
        default=1000,
        ge=0,
        description="Retries delayed this long or more wait in Redis, not in a worker's "
        "memory; at most half of `celery.visibility_timeout_s`.",
    )
    scheduler_interval_ms: int = Field(
        default=100,
        ge=1,
        description="How often the bridge moves due retries to their queues.",
    )
    attempt_history: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="How many of a record's latest failed attempts (each with its exception and "
        "traceback) Redis keeps for the operator console; 0 keeps none.",
    )
    attempt_history_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long a record's failed attempts stay in Redis after its last one.",
    )


class OrderingSettings(Section):
    """Ordered routes: when a key's head is presumed lost, and how often that is checked.

    A head whose task has shown no sign of life (published, started, retry scheduled) for
    ``stall_timeout_s`` is published again, so a lost message never stalls its key for good.
    Celery itself redelivers unacknowledged messages after the visibility timeout, so the
    stall timeout must be longer (default: twice the visibility timeout); a task that runs
    longer than it is presumed lost.
    """

    stall_timeout_s: int | None = Field(
        default=None,
        ge=1,
        description="A head silent this long is published again (default: twice "
        "`celery.visibility_timeout_s`; must exceed it).",
    )
    watchdog_interval_ms: int = Field(
        default=1_000, ge=1, description="How often the bridge looks for stalled heads."
    )


class BreakerSettings(Section):
    """The dead-letter flood breaker (off unless ``dead_letter_ratio`` is set).

    Per route: when more than ``dead_letter_ratio`` of the records that finished in the last
    ``window_s`` (at least ``min_records`` of them) were dead-lettered, consumption of the route
    pauses. After ``cool_down_s`` a probe lets ``probe_records`` records through; if no more
    than the ratio of them is dead-lettered the route resumes, else it pauses again.
    ``check_interval_ms`` is how often the bridge reads the counts in Redis.
    """

    dead_letter_ratio: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Turns the dead-letter flood breaker on: pause a route when more than "
        "this share of its records finished in the window were dead-lettered.",
    )
    window_s: int = Field(
        default=60, ge=1, le=3600, description="The window the ratio is taken over."
    )
    min_records: int = Field(
        default=20,
        ge=1,
        description="Records at least finished in the window before the breaker opens.",
    )
    cool_down_s: float = Field(
        default=30.0, gt=0, description="How long the breaker stays open before a probe."
    )
    probe_records: int = Field(default=10, ge=1, description="Records the probe lets through.")
    check_interval_ms: int = Field(
        default=1_000, ge=10, description="How often the bridge reads the counts in Redis."
    )
