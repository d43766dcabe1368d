"""Shared fixtures. Integration fixtures need the real services: ``bash scripts/services.sh up``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings

T = TypeVar("T")

KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"


def bridge_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The captured records of the bridge's own loggers: a test runs in one process with the
    clients other tests left behind (a session's Kafka producer logs about their deleted
    topics from its own thread), whose lines are not the test's subject."""
    return [r for r in caplog.records if r.name == "bridge" or r.name.startswith("bridge.")]


def bridge_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in bridge_records(caplog)]


def wait_for(
    condition: Callable[[], T], *, timeout_s: float = 30.0, interval_s: float = 0.05, what: str
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)  # polling interval of a deadline wait, not a wait for a result


def wait_progress(
    progress: Callable[[], tuple[bool, object]],
    *,
    stall_s: float = 30.0,
    limit_s: float = 600.0,
    interval_s: float = 0.05,
    what: str,
) -> None:
    """Poll ``progress`` (``(done, marker)``) until done; fail when the marker has not changed
    for ``stall_s`` (a stall) or after ``limit_s`` in all.

    For waits whose length grows with the work and the machine's load (a backlog drained by a
    worker): a busy machine makes them slower, not stuck, and only being stuck is a failure.
    """
    started = last_change = time.monotonic()
    done, marker = progress()
    while not done:
        now = time.monotonic()
        if now - last_change > stall_s or now - started > limit_s:
            waited = f"no progress for {stall_s} s" if now - last_change > stall_s else "too long"
            raise AssertionError(f"{waited} waiting for {what} (at {marker!r})")
        time.sleep(interval_s)  # polling interval of a deadline wait, not a wait for a result
        done, now_marker = progress()
        if now_marker != marker:
            marker, last_change = now_marker, time.monotonic()


# Property-based tests: reproducible by default (derandomized, no example database in the
# repo, a bounded number of examples, no per-example deadline on 2 shared cores);
# HYPOTHESIS_PROFILE=explore searches randomly and longer.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("explore", max_examples=2000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
