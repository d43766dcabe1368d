"""Log lines that locate their record, in text or JSON (no services)."""

from __future__ import annotations

import json
import logging

import pytest

from bridge.errors import ConfigError
from bridge.logs import FORMAT_ENV, at, format_from_env, formatter
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
