"""Hooks into the bridge loop: how metrics, status reporting and other observers plug in.

A hook subclasses :class:`BridgeHooks` and overrides the methods it needs; every method is a
no-op here. The bridge calls its hooks through :class:`HookChain`, which logs a failing hook and
goes on: an observer must never stop the loop. Hooks run on the loop thread (and
:meth:`BridgeHooks.after_dead_letter` also on the dead-letter writer's thread), so they must be
quick and must not block on I/O for long.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from bridge.offsets import Partition

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record not enqueued: an ordered record whose key or partition holds too many records
    (``full``: ``key`` or ``partition``), or a record below a watermark that may be another
    incarnation's of its topic (``watermark``: the topic's id is unknown).

    Nothing after it in its partition was accepted either; ``watch`` is the Redis key whose
    length (a FIFO) or value (a partition's counter, the watermark) must fall (to 0 for the
    watermark: it is deleted or expires) before it is tried again.
    """

    topic: str
    partition: int
    offset: int
    full: str  # "key" | "partition" | "watermark"
    watch: str
    limit: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one batch publish did."""

    enqueued: int
    skipped: int
    appended: int = 0
    refused: tuple[Refusal, ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One assigned partition as the bridge sees it.

    ``accepted`` and ``committed`` are next offsets (``None`` until the bridge accepted or
    committed anything on it in this assignment); ``highwater`` is the partition's end offset as
    of the last fetch (``None`` before the first); ``paused`` says why consumption is paused
    (``broker-down``, ``dead-letter-flood``, ``backpressure``, ``key-full`` or
    ``partition-full``) or is ``None``.
    """

    topic: str
    partition: int
    accepted: int | None
    committed: int | None
    highwater: int | None
    paused: str | None = None

    @property
    def position(self) -> int | None:
        """The next offset to hand on: after what was accepted, else the committed offset."""
        return self.committed if self.accepted is None else self.accepted

    @property
    def lag(self) -> int | None:
        """Records after the consumer's position, as of the last fetch."""
        if self.highwater is None or self.position is None:
            return None
        return max(0, self.highwater - self.position)

    @property
    def uncommitted(self) -> int:
        """Records accepted by Celery (or a key FIFO) whose offsets are not committed yet."""
        if self.accepted is None:
            return 0
        return max(0, self.accepted - (self.committed or 0))


@dataclass(frozen=True, slots=True)
class BreakerReport:
    """One route's breaker as ``status`` and the metrics show it (``since_ms``: when the state
    began, ``None`` if closed from the start; ``handled`` and ``dead_lettered``: the last
    window or probe read)."""

    topic: str
    state: str
    since_ms: int | None
    trips: int
    handled: int
    dead_lettered: int
    ratio: float


@dataclass(frozen=True, slots=True)
class LoopState:
    """A snapshot of one bridge process, taken about once a second."""

    member: str
    group_id: str
    at_ms: int
    broker_down: bool
    partitions: tuple[PartitionState, ...] = field(default_factory=tuple)
    breakers: tuple[BreakerReport, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what a bridge reports in Redis for ``status``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopState:
        """Inverse of :meth:`to_dict`; fields it does not know (a report from another version
        of the bridge) are left out."""
        parts = tuple(_known(PartitionState, p) for p in data.get("partitions", ()))
        breakers = tuple(_known(BreakerReport, b) for b in data.get("breakers", ()))
        return cls(data["member"], data["group_id"], int(data["at_ms"]), bool(data["broker_down"]),
                   parts, breakers)  # fmt: skip


def _known(kind: type[T], data: Mapping[str, Any]) -> T:
    names = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    return kind(**{k: v for k, v in data.items() if k in names})


class BridgeHooks:
    """Observer of the bridge loop. Every method is a no-op; override what you need.

    Durations are in seconds (``time.perf_counter`` differences).
    """

    def after_poll(self, counts: Mapping[Partition, int]) -> None:
        """Records fetched by one poll, per partition (only non-empty partitions)."""

    def after_publish(self, outcome: Outcome, took_s: float) -> None:
        """One batch enqueued in Redis: task messages published, records appended to key
        FIFOs, re-consumed records skipped and ordered appends refused (see ``Outcome``)."""

    def after_publish_failed(self, records: int, error: BaseException, took_s: float) -> None:
        """A batch of ``records`` was not enqueued: the Celery broker failed."""

    def after_accept(self, offsets: Mapping[Partition, tuple[int, int]]) -> None:
        """Records of one batch accepted (enqueued, appended, skipped as already enqueued or
        dead-lettered): per partition, the first accepted offset and the next offset after the
        last. The first offset accepted on a partition is where its commits start from."""

    def after_commit(self, offsets: Mapping[Partition, int], took_s: float) -> None:
        """Offsets (next offsets) committed to Kafka."""

    def after_commit_failed(self, error: BaseException) -> None:
        """A commit to Kafka failed; it is retried after the next poll."""

    def after_dead_letter(self, topic: str, reason: str, deferred: bool) -> None:
        """The bridge wrote a dead letter of a record of ``topic`` for ``reason``: an
        undecodable record, or (``deferred``) one a worker could not write while Kafka was
        down."""

    def after_state(self, state: LoopState) -> None:
        """The bridge's state, about once a second."""

    def on_stop(self) -> None:
        """The bridge has stopped; release resources."""


class HookChain(BridgeHooks):
    """Calls several hooks in order; a hook that raises is logged and the others still run."""

    def __init__(self, hooks: Sequence[BridgeHooks] = ()) -> None:
        self.hooks = list(hooks)

    def _each(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, method)

    def after_poll(self, counts: Mapping[Partition, int]) -> None:
        self._each("after_poll", counts)

    def after_publish(self, outcome: Outcome, took_s: float) -> None:
        self._each("after_publish", outcome, took_s)

    def after_publish_failed(self, records: int, error: BaseException, took_s: float) -> None:
        self._each("after_publish_failed", records, error, took_s)

    def after_accept(self, offsets: Mapping[Partition, tuple[int, int]]) -> None:
        self._each("after_accept", offsets)

    def after_commit(self, offsets: Mapping[Partition, int], took_s: float) -> None:
        self._each("after_commit", offsets, took_s)

    def after_commit_failed(self, error: BaseException) -> None:
        self._each("after_commit_failed", error)

    def after_dead_letter(self, topic: str, reason: str, deferred: bool) -> None:
        self._each("after_dead_letter", topic, reason, deferred)

    def after_state(self, state: LoopState) -> None:
        self._each("after_state", state)

    def on_stop(self) -> None:
        self._each("on_stop")
