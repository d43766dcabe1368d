"""A route's retry defaults (bridge/worker/retry_defaults.py): the delay they give, where a
task's own options win, and how long a retry waits."""

from datetime import UTC, datetime, timedelta

import pytest

from bridge.worker.retry_defaults import (
    CELERY_DEFAULTS,
    delay_s,
    mark_failed,
    route_backoff_s,
    route_policy,
)


def test_countdown_wins() -> None:
    assert delay_s(2.5, None, 180) == 2.5
    assert delay_s(-1, None, 180) == 0.0


def test_eta_becomes_a_delay() -> None:
    eta = datetime.now(UTC) + timedelta(seconds=30)
    assert delay_s(None, eta, 180) == pytest.approx(30, abs=0.5)
    naive_utc = eta.replace(tzinfo=None)
    assert delay_s(None, naive_utc, 180) == pytest.approx(30, abs=0.5)


def test_default_retry_delay_otherwise() -> None:
    assert delay_s(None, None, 180) == 180.0
    assert delay_s(None, None, None) == 0.0


def test_a_fixed_interval_whatever_the_retry() -> None:
    assert route_backoff_s({"retry_interval": 2.5}, 0) == 2.5
    assert route_backoff_s({"retry_interval": 2.5, "retry_backoff": 3}, 7) == 2.5


def test_no_delay_of_the_route_s_own() -> None:
    assert route_backoff_s({}, 3) is None
    assert route_backoff_s({"max_retries": 5}, 3) is None


@pytest.mark.parametrize(("retries", "expected"), [(0, 3.0), (1, 6.0), (4, 48.0), (5, 50.0)])
def test_exponential_backoff_capped_by_the_route(retries: int, expected: float) -> None:
    route = {"retry_backoff": 3, "retry_backoff_max": 50, "retry_jitter": False}
    assert route_backoff_s(route, retries) == expected


def test_the_task_s_own_cap_and_jitter_win() -> None:
    route = {"retry_backoff": 3, "retry_backoff_max": 50, "retry_jitter": True}
    assert route_backoff_s(route, 5, own_cap_s=20, own_jitter=False) == 20.0
    assert route_backoff_s({"retry_backoff": 3}, 9, own_jitter=False) == 600.0  # Celery's cap


def test_jitter_by_default_draws_up_to_the_backoff() -> None:
    assert CELERY_DEFAULTS == {"retry_backoff_max": 600, "retry_jitter": True}
    drawn = {route_backoff_s({"retry_backoff": 4}, 2) for _ in range(200)}
    assert all(d is not None and 0 <= d <= 16 for d in drawn)
    assert len(drawn) > 1
    assert route_backoff_s({"retry_backoff": 4, "retry_jitter": False}, 2) == 16.0


def test_the_route_policy_travels_in_the_envelope() -> None:
    assert route_policy(({"retry": {"max_retries": 2}}, "more")) == {"max_retries": 2}
    assert route_policy(({"retry": None},)) == {}
    assert route_policy(({},)) == {}
    assert route_policy(("not an envelope",)) == {}
    assert route_policy(()) == {}
    assert route_policy(None) == {}


def test_the_first_failure_is_stamped_once() -> None:
    stamped = mark_failed({"topic": "a"})
    assert stamped["topic"] == "a"
    assert stamped["first_failure_at"].endswith("Z")
    kept = {"topic": "a", "first_failure_at": "2026-11-22T10:00:00.000Z"}
    assert mark_failed(kept) is kept
