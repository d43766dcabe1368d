"""A hook of the bridge loop that warns, in the bridge's log, when a route's task is run by
no live worker of its queue (a typo in ``task``, a worker that does not import the handler) or
is not a ``RecordTask`` there: its records are dead-lettered as ``unroutable`` meanwhile.

It reads what workers register (:mod:`bridge.backends.redis.worker_registry`) every
:data:`INTERVAL_S`
seconds on its own Redis client with short timeouts, and logs a problem when it appears or
changes, and once more when it is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from bridge.backends.redis.client import broker_client
from bridge.backends.redis.worker_registry import (
    Registration,
    coverage,
    read_registrations,
    task_problem,
)
from bridge.hooks import BridgeHooks, LoopState
from bridge.logs import at
from bridge.routing import Route
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

INTERVAL_S = 30.0


def route_problems(routes: Sequence[Route], workers: Sequence[Registration]) -> dict[str, str]:
    """What is wrong with each route's task among the live workers, by topic (pure)."""
    found = {}
    for route in routes:
        problem = task_problem(route.task, route.queue, coverage(route.task, route.queue, workers))
        if problem is not None:
            found[route.topic] = problem
    return found


class RouteWatch(BridgeHooks):
    """Logs route problems as they appear, change and go (a hook); a Redis error only logs
    at DEBUG: the bridge's own outage handling reports it."""

    def __init__(self, client: redis.Redis, routes: Sequence[Route]) -> None:
        self._client = client
        self._routes = list(routes)
        self._known: dict[str, str] = {}
        self._due = 0.0  # monotonic

    def after_state(self, state: LoopState) -> None:
        if state.broker_down or time.monotonic() < self._due:
            return
        self._due = time.monotonic() + INTERVAL_S
        try:
            workers = read_registrations(self._client)
        except redis.RedisError as exc:
            log.debug("worker registrations not read: %r", exc)
            return
        self._report(route_problems(self._routes, workers))

    def _report(self, problems: dict[str, str]) -> None:
        for topic, problem in sorted(problems.items()):
            if self._known.get(topic) != problem:
                log.warning("route %s: %s", topic, problem, extra=at(topic=topic))
        for topic in sorted(set(self._known) - set(problems)):
            log.info("route %s: its task is run by a live worker again", topic,
                     extra=at(topic=topic))  # fmt: skip
        self._known = problems

    def on_stop(self) -> None:
        self._client.close()


def route_watch(settings: BridgeSettings, routes: Sequence[Route]) -> RouteWatch:
    """The watch of a bridge run with ``settings``, on a Redis client of its own with short
    timeouts: it must not hold the loop up."""
    client = broker_client(settings.celery, socket_connect_timeout=0.5, socket_timeout=0.5)
    return RouteWatch(client, routes)
