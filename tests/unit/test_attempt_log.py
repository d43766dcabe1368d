"""A record's failed attempts, as Redis keeps them for the console (bridge.attempt_log)."""

from __future__ import annotations

from bridge.attempt_log import STACKTRACE_CHARS, Attempt, delay_of


def raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_an_attempt_keeps_its_number_outcome_exception_and_traceback() -> None:
    attempt = Attempt.of(3, "2026-12-04T10:00:00.000Z", "w1@h", "retry",
                         raised(TimeoutError("downstream")), 1.5)  # fmt: skip
    assert (attempt.number, attempt.outcome, attempt.delay_s) == (3, "retry", 1.5)
    assert (attempt.fqcn, attempt.message) == ("builtins.TimeoutError", "downstream")
    assert attempt.stacktrace.startswith("Traceback (most recent call last)")
    assert Attempt.from_json(attempt.to_json()) == attempt


def test_a_long_traceback_keeps_its_end() -> None:
    exc = raised(ValueError("x" * (3 * STACKTRACE_CHARS)))
    trace = Attempt.of(1, "t", "w", "dead-lettered", exc).stacktrace
    assert len(trace) == STACKTRACE_CHARS + 1
    assert trace.startswith("…")
    assert trace.endswith("x\n")


def test_what_is_not_an_attempt_is_skipped() -> None:
    assert Attempt.from_json(b"not json") is None
    assert Attempt.from_json('{"number": 1}') is None
    assert Attempt.from_json("[1, 2]") is None


def test_a_retrys_when_is_a_delay_only_when_it_is_a_number() -> None:
    assert delay_of(2) == 2.0
    assert delay_of(0.25) == 0.25
    assert delay_of(None) is None
    assert delay_of("soon") is None
