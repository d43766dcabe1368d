"""The section of the Prometheus ``/metrics`` endpoints (``[metrics]``)."""

from __future__ import annotations

from pydantic import Field

from bridge.sections.base import Section


class MetricsSettings(Section):
    """Prometheus ``/metrics`` endpoints: the bridge's (``port``) and one per Celery worker
    (``worker_port``, served by the worker's main process for all its pool processes).

    A port of 0 turns the endpoint off (the default). ``addr`` is the address to listen on:
    every interface by default, so that a Prometheus server elsewhere can scrape it.
    ``redis_interval_s`` is how often at most a scrape of the bridge reads the group's counts
    in Redis (delayed retries, dead letters, ordered keys); scrapes in between get the last.
    """

    port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="The bridge's `/metrics` port (`--metrics-port` wins), e.g. 9464; 0: off.",
    )
    addr: str = Field(
        default="0.0.0.0",
        min_length=1,
        description="The bridge's `/metrics` address (`--metrics-addr` wins).",
    )
    worker_port: int = Field(
        default=0,
        ge=0,
        le=65_535,
        description="Each worker's `/metrics` port, e.g. 9465 (one per worker on a host: set "
        "it per worker with `BRIDGE_METRICS__WORKER_PORT`); 0: off.",
    )
    worker_addr: str = Field(
        default="0.0.0.0", min_length=1, description="The workers' `/metrics` address."
    )
    redis_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="A scrape reads the group's counts in Redis at most this often.",
    )
