"""The section of one route (``[[routes]]``): a Kafka topic handed to a Celery task, how its
records are decoded, its backpressure, its retry defaults and, ordered, per-key limits."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bridge.sections.base import Section

ValueFormat = Literal["json", "text", "bytes"]
OnExhausted = Literal["dead-letter", "park"]
VALUE_FORMATS: tuple[ValueFormat, ...] = ("json", "text", "bytes")
MAX_QUEUE_DEPTH = 10_000  # default max_queue_depth: records in a route's Celery queue
MAX_BATCH_SIZE = 10_000  # records in one task message at most
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class RouteSettings(Section):
    """One Kafka topic handed to one Celery task."""

    topic: str = Field(description="The Kafka topic.")
    task: str = Field(
        min_length=1,
        description="The Celery task name its records go to (any registered task; the bridge "
        "never imports it).",
    )
    queue: str = Field(default="celery", min_length=1, description="The Celery queue.")
    ordered: bool = Field(
        default=False,
        description="Per-key order: records of one key run one at a time, in offset order, "
        "and only a failing key waits.",
    )
    value_format: ValueFormat = Field(
        default="json", description="How the value is decoded: `json`, `text` or `bytes`."
    )
    dlt_topic: str | None = Field(
        default=None, description="The dead-letter topic (default: `{topic}.{group_id}.dlt`)."
    )
    # Backpressure: Kafka stays the buffer, also when no worker consumes the queue.
    max_queue_depth: int = Field(
        default=MAX_QUEUE_DEPTH,
        ge=1,
        description="Backpressure: pause the route's partitions at this Celery queue depth, "
        "in records (a batched route's message counts as `batch_size` records)...",
    )
    resume_queue_depth: int | None = Field(
        default=None,
        ge=0,
        description="...and resume them at this one (default: half of `max_queue_depth`).",
    )
    max_retries: int | None = Field(
        default=None,
        ge=0,
        description="Retry default for this route's records (a task's own options win).",
    )
    retry_backoff_s: int | None = Field(
        default=None,
        ge=1,
        description="Retry default: exponential backoff factor in seconds, as Celery's "
        "`retry_backoff`.",
    )
    retry_backoff_max_s: int | None = Field(
        default=None, ge=1, description="Retry default: the backoff's cap."
    )
    retry_jitter: bool | None = Field(
        default=None, description="Retry default: jitter on the backoff."
    )
    retry_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="Retry default: a fixed delay instead of `retry_backoff_s`.",
    )
    on_exhausted: OnExhausted = Field(
        default="dead-letter",
        description="Ordered routes: `dead-letter` (and go on with the key) or `park` (the "
        "key stops until `release`).",
    )
    max_waiting_per_key: int = Field(
        default=10_000,
        ge=1,
        description="Ordered routes: pause the partition when one key has this many records "
        "waiting...",
    )
    max_waiting_per_partition: int = Field(
        default=100_000,
        ge=1,
        description="...or the partition this many in key FIFOs.",
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Records per task message: up to this many consecutive records of one "
        "partition go to the task together (its base must be `RecordBatchTask`); 1: one "
        "record per message. Ordered routes: up to this many consecutive records of one key "
        "(of one partition, for records without a key), from the key's FIFO.",
    )
    batch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        description="Batched routes: a partial batch is published once its oldest record "
        "has waited this long in the bridge (a route with `batch_size = 1` never waits).",
    )

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
