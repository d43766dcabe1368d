"""Prometheus metrics of the bridge: a :class:`~bridge.hooks.BridgeHooks` observer, the
group's counts in Redis read at scrape time, and the ``/metrics`` HTTP server.

The bridge is one process: its metrics live in ordinary (single-process) values, even if
``PROMETHEUS_MULTIPROC_DIR`` is set in its environment (that mode is for the Celery workers,
see :mod:`bridge.worker.metrics`). Per-partition gauges carry only the partitions assigned at
the last state report: a revoked partition's label sets are removed.

The counts kept in Redis (delayed retries, dead letters not in Kafka yet, ordered keys and
their waiting records) are shared by every bridge of the consumer group. They are read by the
HTTP server's thread when Prometheus scrapes, at most once every ``metrics.redis_interval_s``
(scrapes in between get the last reading), never on the loop's thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.backends.redis.client import broker_client
from bridge.backends.redis.waiting import RedisCounts, read_counts
from bridge.breaker import level as breaker_level
from bridge.errors import ConfigError
from bridge.hooks import BridgeHooks, LoopState
from bridge.metrics_server import MetricsServer, single_process_values
from bridge.offsets import Partition

if TYPE_CHECKING:
    from bridge.hooks import Outcome
    from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

NO_RETRY = Retry(NoBackoff(), 0)

# Seconds: a batch publish to Redis or a commit to Kafka takes a millisecond or so when well.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

Labels = tuple[str, ...]


class CommittedRecords:
    """Records committed per topic, as the growth of each partition's committed offset (pure).

    A partition's first commit in an assignment counts from the first offset the bridge
    accepted on it (where its previous owner's commits ended). State: partition -> last
    committed (or first accepted) offset; a partition no longer assigned is forgotten.
    """

    def __init__(self) -> None:
        self._last: dict[Partition, int] = {}

    def accepted(self, spans: Mapping[Partition, tuple[int, int]]) -> None:
        """Records accepted: ``(first offset, next offset)`` per partition."""
        for tp, (first, _next) in spans.items():
            self._last.setdefault(tp, first)

    def committed(self, offsets: Mapping[Partition, int]) -> dict[str, int]:
        """Next offsets committed per partition -> records newly committed per topic."""
        per_topic: dict[str, int] = {}
        for tp, offset in offsets.items():
            last = self._last.get(tp, offset)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, offset - last)
            self._last[tp] = max(offset, last)
        return per_topic

    def keep(self, assigned: Iterable[Partition]) -> None:
        """Forget every partition not in ``assigned``."""
        kept = set(assigned)
        self._last = {tp: o for tp, o in self._last.items() if tp in kept}


class LabelSets:
    """The label sets one gauge exported at its last update, so that gone ones are removed."""

    def __init__(self) -> None:
        self._current: set[Labels] = set()

    def update(self, now: Iterable[Labels]) -> set[Labels]:
        """Remember ``now``; return the label sets exported before but not any more."""
        now = set(now)
        gone, self._current = self._current - now, now
        return gone


class PartitionGauge:
    """A gauge with one sample per assigned partition (and any more labels); samples of
    partitions no longer reported are removed."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._sets = LabelSets()

    def update(self, samples: Mapping[Labels, float]) -> None:
        """Set every sample of ``samples``; remove those it no longer has."""
        for labels, value in samples.items():
            self.gauge.labels(*labels).set(value)
        for labels in self._sets.update(samples):
            with contextlib.suppress(KeyError):
                self.gauge.remove(*labels)


def partition_samples(state: LoopState) -> dict[str, dict[Labels, float]]:
    """The per-partition gauges' samples of one state report (pure): ``lag`` (partitions
    whose end offset is known), ``uncommitted`` and ``paused`` (label: the reason)."""
    lag: dict[Labels, float] = {}
    uncommitted: dict[Labels, float] = {}
    paused: dict[Labels, float] = {}
    for p in state.partitions:
        labels = (p.topic, str(p.partition))
        if p.lag is not None:
            lag[labels] = p.lag
        uncommitted[labels] = p.uncommitted
        if p.paused:
            paused[(*labels, p.paused)] = 1
    return {"lag": lag, "uncommitted": uncommitted, "paused": paused}


class BridgeMetrics(BridgeHooks):
    """The bridge loop's metrics, registered in ``registry``.

    :param registry: where the metrics are registered (the default registry by default).
    :param on_stop: called when the bridge stops (e.g. to close the HTTP server).
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._on_stop = on_stop
        self._committed = CommittedRecords()
        self._trips: dict[str, int] = {}
        with single_process_values():
            self._counters(registry)
            self._gauges(registry)

    def _counters(self, r: CollectorRegistry) -> None:
        self.consumed = Counter("bridge_records_consumed", "Records fetched from Kafka by the "
                                "bridge's polls.", ["topic"], registry=r)  # fmt: skip
        self.published = Counter("bridge_tasks_published", "Celery task messages published "
                                 "for records of unordered routes.", registry=r)  # fmt: skip
        self.appended = Counter("bridge_records_appended", "Records of ordered routes appended "
                                "to their key's FIFO in Redis.", registry=r)  # fmt: skip
        self.skipped = Counter("bridge_records_skipped", "Re-consumed records not enqueued "
                               "again: they already were.", registry=r)  # fmt: skip
        self.refused = Counter("bridge_records_refused", "Records not enqueued because their "
                               "key or partition was full (ordered), or their watermark cannot "
                               "be verified (consumed again later).", ["full"],
                               registry=r)  # fmt: skip
        self.committed = Counter("bridge_records_committed", "Records whose offsets the bridge "
                                 "committed to Kafka.", ["topic"], registry=r)  # fmt: skip
        self.dead_letters = Counter("bridge_dead_letters", "Dead letters the bridge wrote to "
                                    "Kafka: undecodable records, and (deferred=\"true\") those "
                                    "a worker could not write.", ["topic", "reason", "deferred"],
                                    registry=r)  # fmt: skip
        self.publish_failures = Counter("bridge_publish_failures", "Batches not enqueued: the "
                                        "Celery broker failed.", registry=r)  # fmt: skip
        self.commit_failures = Counter("bridge_commit_failures", "Commits to Kafka that failed "
                                       "(retried after the next poll).", registry=r)  # fmt: skip
        self.publish_s = Histogram("bridge_publish_duration_seconds", "Time to enqueue one "
                                   "batch in Redis (seconds).", buckets=LATENCY_BUCKETS_S,
                                   registry=r)  # fmt: skip
        self.breaker_trips = Counter("bridge_flood_breaker_trips", "Times a route's dead-letter "
                                     "flood breaker opened (paused the route).", ["topic"],
                                     registry=r)  # fmt: skip
        self.commit_s = Histogram("bridge_commit_duration_seconds", "Time to commit offsets to "
                                  "Kafka (seconds).", buckets=LATENCY_BUCKETS_S,
                                  registry=r)  # fmt: skip

    def _gauges(self, r: CollectorRegistry) -> None:
        per_partition = ["topic", "partition"]
        self.lag = PartitionGauge(Gauge("bridge_consumer_lag_records", "Records after the "
                                        "bridge's position, as of the last fetch.",
                                        per_partition, registry=r))  # fmt: skip
        self.uncommitted = PartitionGauge(Gauge("bridge_uncommitted_records", "Records accepted "
                                                "by Celery (or a key FIFO) whose offsets are not "
                                                "committed yet.", per_partition,
                                                registry=r))  # fmt: skip
        self.paused = PartitionGauge(Gauge("bridge_partition_paused", "1 while a partition is "
                                           "paused, labelled with why.",
                                           [*per_partition, "reason"], registry=r))  # fmt: skip
        self.assigned = Gauge("bridge_assigned_partitions", "Partitions assigned to this "
                              "bridge.", registry=r)  # fmt: skip
        self.broker_down = Gauge("bridge_celery_broker_down", "1 while the Celery broker is "
                                 "unavailable to the bridge.", registry=r)  # fmt: skip
        self.breaker_state = Gauge("bridge_flood_breaker_state", "A route's dead-letter flood "
                                   "breaker: 0 closed, 1 half-open (probing), 2 open (paused).",
                                   ["topic"], registry=r)  # fmt: skip
        self.breaker_ratio = Gauge("bridge_flood_dead_letter_ratio", "The share of a route's "
                                   "finished records that were dead-lettered, in the breaker's "
                                   "last window (or probe).", ["topic"], registry=r)  # fmt: skip

    def after_poll(self, counts: Mapping[Partition, int]) -> None:
        for tp, n in counts.items():
            self.consumed.labels(tp.topic).inc(n)

    def after_publish(self, outcome: Outcome, took_s: float) -> None:
        self.published.inc(outcome.enqueued)
        self.appended.inc(outcome.appended)
        self.skipped.inc(outcome.skipped)
        for refusal in outcome.refused:
            self.refused.labels(refusal.full).inc()
        self.publish_s.observe(took_s)

    def after_publish_failed(self, records: int, error: BaseException, took_s: float) -> None:
        self.publish_failures.inc()

    def after_accept(self, offsets: Mapping[Partition, tuple[int, int]]) -> None:
        self._committed.accepted(offsets)

    def after_commit(self, offsets: Mapping[Partition, int], took_s: float) -> None:
        for topic, n in self._committed.committed(offsets).items():
            self.committed.labels(topic).inc(n)
        self.commit_s.observe(took_s)

    def after_commit_failed(self, error: BaseException) -> None:
        self.commit_failures.inc()

    def after_dead_letter(self, topic: str, reason: str, deferred: bool) -> None:
        self.dead_letters.labels(topic, reason, str(deferred).lower()).inc()

    def after_state(self, state: LoopState) -> None:
        samples = partition_samples(state)
        self.lag.update(samples["lag"])
        self.uncommitted.update(samples["uncommitted"])
        self.paused.update(samples["paused"])
        self.assigned.set(len(state.partitions))
        self.broker_down.set(int(state.broker_down))
        self._committed.keep(Partition(p.topic, p.partition) for p in state.partitions)
        for b in state.breakers:
            self.breaker_state.labels(b.topic).set(breaker_level(b.state))
            self.breaker_ratio.labels(b.topic).set(b.ratio)
            self.breaker_trips.labels(b.topic).inc(b.trips - self._trips.get(b.topic, 0))
            self._trips[b.topic] = b.trips

    def on_stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()


def redis_families(group_id: str, counts: RedisCounts | None) -> list[Metric]:
    """The gauges of one reading (pure); without a reading, the families have no samples."""
    g = [group_id]

    def family(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["group", *labels])

    retries = family("bridge_delayed_retries_waiting", "Retries waiting in Redis until due.")
    dead = family("bridge_dead_letters_waiting", "Dead letters not in Kafka yet: pending "
                  "(written later) or parked (refused by Kafka).", ["state"])  # fmt: skip
    out = family("bridge_ordered_keys_out", "Ordered keys whose head is out (queued, running "
                 "or retrying).")  # fmt: skip
    retrying = family("bridge_ordered_keys_retrying", "Ordered keys whose head is retrying.")
    parked = family("bridge_ordered_keys_parked", "Ordered keys parked until released.")
    waiting = family("bridge_ordered_records_waiting", "Records waiting in key FIFOs (heads "
                     "included).", ["topic", "partition"])  # fmt: skip
    if counts is not None:
        retries.add_metric(g, counts.delayed_retries)
        dead.add_metric([*g, "pending"], counts.dead_letters_pending)
        dead.add_metric([*g, "parked"], counts.dead_letters_parked)
        out.add_metric(g, counts.keys_out)
        retrying.add_metric(g, counts.keys_retrying)
        parked.add_metric(g, counts.keys_parked)
        for (topic, partition), n in sorted(counts.records_waiting.items()):
            waiting.add_metric([*g, topic, str(partition)], n)
    return [retries, dead, out, retrying, parked, waiting]


class RedisGauges(Collector):
    """The group's counts in Redis, read when scraped, at most once every ``interval_s``.

    :param ordered: whether any route is ordered (else the key FIFOs are not looked at).
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        client: redis.Redis,
        group_id: str,
        *,
        ordered: bool,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._group_id = group_id
        self._ordered = ordered
        self._interval_s = interval_s
        self._clock = clock
        self._client = client
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._counts: RedisCounts | None = None

    def describe(self) -> Iterable[Metric]:
        """The families (no samples): registering this collector reads nothing from Redis."""
        return redis_families(self._group_id, None)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._interval_s:
                self._read_at = now
                self._counts = self._read()
            counts = self._counts
        return redis_families(self._group_id, counts)

    def _read(self) -> RedisCounts | None:
        try:
            return read_counts(self._client, self._group_id, ordered=self._ordered)
        except redis.RedisError as exc:
            log.warning("metrics: Redis counts of group %s not read: %r", self._group_id, exc)
            return None


def start_bridge_metrics(settings: BridgeSettings, port: int, addr: str) -> BridgeMetrics:
    """The bridge's metrics in the default registry, served on ``addr:port`` until the
    bridge stops.

    :raises ConfigError: the port cannot be listened on.
    """
    # Short timeouts and no retries: a scrape while Redis is down must not hang.
    client = broker_client(
        settings.celery, socket_connect_timeout=2, socket_timeout=2, retry=NO_RETRY
    )
    gauges = RedisGauges(
        client,
        settings.kafka.group_id,
        ordered=any(route.ordered for route in settings.routes),
        interval_s=settings.metrics.redis_interval_s,
    )
    REGISTRY.register(gauges)
    try:
        server = MetricsServer(port, addr, REGISTRY, key="--metrics-port (metrics.port)")
    except ConfigError:
        REGISTRY.unregister(gauges)
        client.close()
        raise

    def stop() -> None:
        server.close()
        client.close()

    return BridgeMetrics(REGISTRY, on_stop=stop)
