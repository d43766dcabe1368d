"""Topic -> route: which Celery task, queue and dead-letter topic a record goes to (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bridge.settings import BridgeSettings, OnExhausted, RouteSettings, ValueFormat


@dataclass(frozen=True, slots=True)
class Route:
    """Where the records of one topic go."""

    topic: str
    task: str
    queue: str
    ordered: bool
    value_format: ValueFormat
    dlt_topic: str
    max_queue_depth: int | None = None
    resume_queue_depth: int | None = None
    retry_policy: dict[str, float | bool] | None = None
    on_exhausted: OnExhausted = "dead-letter"
    max_waiting_per_key: int = 10_000
    max_waiting_per_partition: int = 100_000
    # The dead-letter flood breaker's window, when it is on: workers then count outcomes.
    breaker_window_s: int | None = None
    # Records per task message (1: one each), and how long a partial batch may wait (ms).
    batch_size: int = 1
    batch_max_wait_ms: int = 0


class Router:
    """Look up the route of a topic; built once from the settings."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._by_topic = {route.topic: route for route in routes}

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> Router:
        """One route per ``[[routes]]`` entry, DLT names resolved for the consumer group."""
        group_id = settings.kafka.group_id
        breaker = settings.breaker
        window_s = breaker.window_s if breaker.dead_letter_ratio is not None else None
        return cls(
            Route(
                topic=r.topic,
                task=r.task,
                queue=r.queue,
                ordered=r.ordered,
                value_format=r.value_format,
                dlt_topic=r.dead_letter_topic(group_id),
                max_queue_depth=r.max_queue_depth,
                resume_queue_depth=r.resume_depth,
                retry_policy=_retry_policy(r),
                on_exhausted=r.on_exhausted,
                max_waiting_per_key=r.max_waiting_per_key,
                max_waiting_per_partition=r.max_waiting_per_partition,
                breaker_window_s=window_s,
                batch_size=r.batch_size,
                batch_max_wait_ms=r.batch_max_wait_ms if r.batch_size > 1 else 0,
            )
            for r in settings.routes
        )

    @property
    def topics(self) -> list[str]:
        """Every routed topic, sorted."""
        return sorted(self._by_topic)

    @property
    def routes(self) -> list[Route]:
        """Every route, sorted by topic."""
        return [self._by_topic[topic] for topic in self.topics]

    def route_for(self, topic: str) -> Route:
        """The route of ``topic``.

        :raises KeyError: the topic is not routed.
        """
        return self._by_topic[topic]


def _retry_policy(route: RouteSettings) -> dict[str, float | bool] | None:
    """The route's retry defaults, as they travel in each record's envelope."""
    policy: dict[str, float | bool | None] = {
        "retry_interval": route.retry_interval_s,
        "max_retries": route.max_retries,
        "retry_backoff": route.retry_backoff_s,
        "retry_backoff_max": route.retry_backoff_max_s,
        "retry_jitter": route.retry_jitter,
    }
    present = {k: v for k, v in policy.items() if v is not None}
    return present or None
