"""Log lines that locate their record, in text or JSON (no services)."""

from __future__ import annotations

import json
import logging

import pytest

from bridge.errors import ConfigError
from bridge.logs import FORMAT_ENV, RepeatFilter, RepeatGate, at, format_from_env, formatter
from bridge.record import Record


def line(log_format: str, **extra: object) -> str:
    record = logging.LogRecord("bridge.x", logging.ERROR, __file__, 1, "%s died", ("r",), None)
    record.__dict__.update(extra)
    return formatter(log_format).format(record)  # type: ignore[arg-type]


def test_a_json_line_carries_the_record_location_as_fields() -> None:
    rec = Record("orders", 3, 1207, 0, b"k", b"{}", (), "json")
    data = json.loads(line("json", **at(rec, task_id="g:orders:3:1207")))
    assert data["message"] == "r died"
    assert (data["level"], data["logger"]) == ("ERROR", "bridge.x")
    assert (data["topic"], data["partition"], data["offset"]) == ("orders", 3, 1207)
    assert data["task_id"] == "g:orders:3:1207"
    assert "time" in data


def test_at_leaves_out_what_it_does_not_know() -> None:
    assert at(topic="t", partition=0) == {"topic": "t", "partition": 0}
    assert at(task_id="x") == {"task_id": "x"}
    assert "r died" in line("text")


def test_the_format_comes_from_the_environment_and_a_wrong_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(FORMAT_ENV, raising=False)
    assert format_from_env() == "text"
    monkeypatch.setenv(FORMAT_ENV, "json")
    assert format_from_env() == "json"
    monkeypatch.setenv(FORMAT_ENV, "yaml")
    with pytest.raises(ConfigError, match="BRIDGE_LOG_FORMAT"):
        format_from_env()


def test_a_repeated_line_is_shown_once_then_summarised_with_a_doubling_window() -> None:
    gate = RepeatGate(first_window_s=1.0, max_window_s=4.0)
    shown = {}
    for tenth in range(0, 100):  # the same line ten times a second for 10 s
        held = gate.admit("line", tenth / 10)
        if held is not None:
            shown[tenth / 10] = held
    # at once; after 1 s (9 held); after 2 s more (19); then every 4 s (the cap)
    assert shown == {0.0: 0, 1.0: 9, 3.0: 19, 7.0: 39}


def test_a_line_quiet_for_a_whole_window_starts_over() -> None:
    gate = RepeatGate(first_window_s=1.0, max_window_s=8.0)
    assert gate.admit("line", 0.0) == 0
    assert gate.admit("line", 1.5) == 0  # the window ended, nothing was held
    assert gate.admit("line", 1.6) is None
    assert gate.admit("line", 10.0) == 0  # quiet for longer than two windows: as new
    assert gate.admit("other", 10.0) == 0


def test_the_filter_holds_repeated_warnings_but_not_info_lines() -> None:
    now = [0.0]
    flt = RepeatFilter(clock=lambda: now[0])
    logger = logging.getLogger("kafka.cluster")

    def log_line(level: int, msg: str, *args: object) -> logging.LogRecord:
        return logger.makeRecord(logger.name, level, __file__, 1, msg, args, None)

    missing = [
        log_line(logging.ERROR, "Topic %s not found in cluster metadata", "t") for _ in range(5)
    ]
    assert [flt.filter(r) for r in missing] == [True, False, False, False, False]
    assert all(flt.filter(log_line(logging.INFO, "polled %d", 3)) for _ in range(3))
    now[0] = 1.0
    summary = log_line(logging.ERROR, "Topic %s not found in cluster metadata", "t")
    assert flt.filter(summary)
    assert summary.getMessage() == "Topic t not found in cluster metadata (and 4 more like it)"
    assert flt.filter(log_line(logging.ERROR, "Topic %s not found in cluster metadata", "u"))
