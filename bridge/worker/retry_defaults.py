"""A route's retry defaults, as :class:`~bridge.worker.task.RecordTask` applies them (pure).

A route may give defaults (``max_retries``; a fixed ``retry_interval`` or an exponential
``retry_backoff`` with its cap and jitter) that travel in the ``retry`` field of each record's
envelope (:func:`bridge.routing._retry_policy` writes it). A task's own options win: the task
says which it has, this module only computes the delay Celery's own backoff would give.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery.utils.time import get_exponential_backoff_interval

from bridge.deadletter import utc_now_iso

CELERY_DEFAULTS: dict[str, Any] = {"retry_backoff_max": 600, "retry_jitter": True}
"""Celery's defaults of a task's backoff cap (s) and jitter, where neither the task nor its
route sets them."""


def route_policy(args: Any) -> dict[str, Any]:
    """The route's retry defaults a task's arguments carry (none when the first argument is
    not a record envelope)."""
    arg = args[0] if args else None
    return dict(arg.get("retry") or {}) if isinstance(arg, dict) else {}


def route_backoff_s(
    route: dict[str, Any], retries: int, *, own_cap_s: Any = None, own_jitter: Any = None
) -> float | None:
    """The delay before retry ``retries + 1`` that ``route``'s defaults give (s); ``None``:
    the route sets no delay (Celery's ``default_retry_delay`` applies).

    :param retries: the retries already made.
    :param own_cap_s: the task's own ``retry_backoff_max``, if it sets one (it wins).
    :param own_jitter: the task's own ``retry_jitter``, if it sets one (it wins).
    """
    if "retry_interval" in route:  # fixed, as RocketMQ retries ordered messages
        return float(route["retry_interval"])
    if "retry_backoff" not in route:
        return None
    return float(
        get_exponential_backoff_interval(
            factor=int(route["retry_backoff"]),
            retries=retries,
            maximum=own_cap_s
            or route.get("retry_backoff_max", CELERY_DEFAULTS["retry_backoff_max"]),
            full_jitter=own_jitter
            if own_jitter is not None
            else route.get("retry_jitter", CELERY_DEFAULTS["retry_jitter"]),
        )
    )


def mark_failed(arg: dict[str, Any]) -> dict[str, Any]:
    """The envelope ``arg`` with the time of its record's first failure (now, unless set)."""
    return arg if arg.get("first_failure_at") else {**arg, "first_failure_at": utc_now_iso()}


def delay_s(countdown: float | None, eta: Any, default_s: float | None) -> float:
    """How long a retry waits (s, never negative): ``countdown``, else until ``eta`` (a naive
    datetime is UTC), else ``default_s`` (the task's ``default_retry_delay``)."""
    if countdown is not None:
        return max(0.0, float(countdown))
    if isinstance(eta, datetime):
        when = eta if eta.tzinfo else eta.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return float(default_s or 0)
