"""Kafka topic administration: create missing dead-letter topics (Kafka I/O)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from bridge.backends.kafka.auth import describe_connection, security_configs
from bridge.routing import Route
from bridge.settings import KafkaSettings

log = logging.getLogger(__name__)

RETRY_S = 5
"""How long the bridge waits before it tries again to create the DLTs of assigned topics."""


def admin_client(kafka: KafkaSettings, bootstrap_timeout_ms: int | None = None) -> KafkaAdminClient:
    """An admin client for the configured cluster.

    :param bootstrap_timeout_ms: how long to wait for a first broker (default:
        ``kafka.request_timeout_ms``).

    :raises KafkaTimeoutError: no broker answered within ``request_timeout_ms`` (the message
        says where and how the bridge connected: a broker that refuses our credentials
        drops the connection much as one that is down).
    """
    try:
        return KafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers.split(","),
            client_id=f"{kafka.client_id}-admin",
            request_timeout_ms=kafka.request_timeout_ms,
            bootstrap_timeout_ms=bootstrap_timeout_ms or kafka.request_timeout_ms,
            **security_configs(kafka),
        )
    except KafkaTimeoutError as exc:
        raise KafkaTimeoutError(
            f"cannot reach Kafka at {describe_connection(kafka)}: {exc}; check bootstrap_servers, "
            f"security_protocol and the credentials (a broker that refuses them logs 'Failed "
            f"authentication')"
        ) from None


def partition_counts(admin: KafkaAdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each topic that exists (missing topics are left out)."""
    counts: dict[str, int] = {}
    for meta in admin.describe_topics(sorted(set(topics))):
        if meta.get("error_code", 0) == 0 and meta.get("partitions"):
            counts[meta["name"]] = len(meta["partitions"])
    return counts


def ensure_dead_letter_topics(
    admin: KafkaAdminClient, routes: Iterable[Route], replication_factor: int = -1
) -> set[str]:
    """Create each route's missing DLT with its source topic's partition count
    (``replication_factor`` -1: the broker's default).

    A DLT whose source topic does not exist yet is skipped with a warning.

    :returns: the routed topics whose DLT exists now (it did, or it was created).
    """
    routes = list(routes)
    existing = partition_counts(admin, [r.topic for r in routes] + [r.dlt_topic for r in routes])
    wanted: dict[str, dict[str, int]] = {}
    ready = {route.topic for route in routes if route.dlt_topic in existing}
    for route in routes:
        if route.dlt_topic in existing:
            continue
        if route.topic not in existing:
            log.warning("topic %s does not exist (yet): its dead-letter topic %s is created once "
                        "it does", route.topic, route.dlt_topic)  # fmt: skip
            continue
        wanted[route.dlt_topic] = {
            "num_partitions": existing[route.topic],
            "replication_factor": replication_factor,
        }
        ready.add(route.topic)
    if wanted:
        # Another bridge of the group may have created it first.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(wanted, wait_for_metadata=True)
        for name, spec in wanted.items():
            log.info("created dead-letter topic %s (%d partitions)", name, spec["num_partitions"])
    return ready


def create_routed_topics(
    admin: KafkaAdminClient, routes: Iterable[Route], partitions: int, replication_factor: int
) -> dict[str, tuple[bool, int]]:
    """Create the routed topics that do not exist, then every route's missing dead-letter topic
    (with its source topic's partition count). Existing topics are left as they are.

    :param partitions: of each routed topic created; -1: the broker's ``num.partitions``.
    :param replication_factor: of each topic created; -1: the broker's
        ``default.replication.factor``.
    :returns: each routed and dead-letter topic -> (created now, its partition count).
    :raises KafkaError: Kafka is unreachable or refuses (e.g. more replicas than brokers).
    """
    routes = list(routes)
    names = [r.topic for r in routes] + [r.dlt_topic for r in routes]
    before = partition_counts(admin, names)
    spec = {"num_partitions": partitions, "replication_factor": replication_factor}
    missing = {r.topic: spec for r in routes if r.topic not in before}
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):  # another process was quicker
            admin.create_topics(missing, wait_for_metadata=True)
    ensure_dead_letter_topics(admin, routes, replication_factor)
    after = partition_counts(admin, names)
    return {name: (name not in before, count) for name, count in after.items()}


class DeadLetterTopics:
    """The routes' dead-letter topics, each created once its source topic exists: at start,
    and for a topic created later, once the bridge is assigned one of its partitions (before
    any of its records can die).

    :param bootstrap_timeout_ms: how long one attempt waits for a first broker.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        routes: Iterable[Route],
        bootstrap_timeout_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kafka = kafka
        self._routes = {route.topic: route for route in routes}
        self._bootstrap_timeout_ms = bootstrap_timeout_ms
        self._ready: set[str] = set()
        self._clock = clock
        self._retry_at = 0.0  # monotonic seconds

    @property
    def complete(self) -> bool:
        """Whether every route's DLT is known to exist (nothing left to look at)."""
        return len(self._ready) == len(self._routes)

    def missing(self, topics: Iterable[str]) -> set[str]:
        """The routed ``topics`` whose DLT is not known to exist."""
        return {t for t in topics if t in self._routes and t not in self._ready}

    def ensure(self, topics: Iterable[str] | None = None) -> None:
        """Create the missing DLTs of ``topics`` (default: every route) whose source exists.

        :raises KafkaError: Kafka is unreachable (``KafkaTimeoutError``) or refuses.
        """
        wanted = self.missing(self._routes if topics is None else topics)
        if not wanted:
            return
        admin = admin_client(self._kafka, self._bootstrap_timeout_ms)
        try:
            self._ready |= ensure_dead_letter_topics(admin, [self._routes[t] for t in wanted])
        finally:
            admin.close()

    def ensure_assigned(self, assigned: Iterable[str]) -> None:
        """Create the missing DLTs of the ``assigned`` topics (a routed topic created after
        the start, once the bridge is assigned it, before its first record is dispatched);
        after a failure, logged, try again in :data:`RETRY_S` at the earliest."""
        missing = self.missing(assigned)
        if not missing or self._clock() < self._retry_at:
            return
        try:
            self.ensure(missing)
        except KafkaError as exc:
            self._retry_at = self._clock() + RETRY_S
            log.warning("dead-letter topics of %s not created yet, trying again in %d s: %r",
                        ", ".join(sorted(missing)), RETRY_S, exc)  # fmt: skip
