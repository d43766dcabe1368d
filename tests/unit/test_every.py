"""A background duty that fails backs off and logs once with its traceback (no services)."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest

from bridge.consumer.every import Every


def test_a_failing_duty_backs_off_and_logs_one_traceback_then_one_line_per_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float] = []
    done = threading.Event()

    def job() -> None:
        calls.append(time.monotonic())
        if len(calls) == 7:
            done.set()
        if len(calls) <= 5:
            raise ConnectionError("Redis is down")

    duty = Every("mover", 0.005, job)
    with caplog.at_level(logging.INFO, logger="bridge.consumer.every"):
        duty.start()
        assert done.wait(timeout=30)
        duty.stop(timeout_s=5)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # 5 ms, doubling after each further failure: 5, 10, 20, 40 ms at least between failed calls
    for gap, least_s in zip(gaps[:4], (0.005, 0.010, 0.020, 0.040), strict=True):
        assert gap >= least_s * 0.9
    records = [r for r in caplog.records if r.name == "bridge.consumer.every"]
    tracebacks = [r for r in records if r.exc_info]
    assert len(tracebacks) == 1
    assert [r.getMessage() for r in records if "failed again" in r.getMessage()][-1].startswith(
        "mover failed again (5 in a row)"
    )
    assert "mover works again after 5 failed attempt(s)" in caplog.text
