"""The Grafana dashboard (grafana/kafka-celery-bridge.json) against the pinned metrics: every
query names a metric and labels the code exports, filters on the job and instance variables,
and counts each dead letter once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_public_surface import BRIDGE_METRICS, REDIS_METRICS, WORKER_METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "kafka-celery-bridge.json"
SCRAPE_LABELS = ("job", "instance")  # added by Prometheus to every sample it scrapes
SELECTOR = re.compile(r"\b(bridge_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*,?')

# What one sample of a dead-letter metric counts: the label that tells, and its values.
WORKER_RESULTS = ("written", "deferred", "refused", "failed")  # bridge.worker.metrics
DEAD_LETTER_KINDS = {
    "bridge_dead_letters_total": ("deferred", ("false", "true")),
    "bridge_worker_dead_letter_writes_total": ("result", WORKER_RESULTS),
}
# A dead letter a worker deferred (result "deferred") is the one the bridge writes later
# (deferred "true"): a sum of both counts it twice.
DEFERRED_TWICE = {
    ("bridge_dead_letters_total", "true"),
    ("bridge_worker_dead_letter_writes_total", "deferred"),
}
# Each dead letter once, where the record was given up: undecodable by the bridge, the rest
# by a worker, whatever became of its write.
EVERY_DEAD_LETTER_ONCE = {
    ("bridge_dead_letters_total", "false"),
    *(("bridge_worker_dead_letter_writes_total", result) for result in WORKER_RESULTS),
}


def sample_labels() -> dict[str, tuple[str, ...]]:
    """Every sample name the code exports (pinned in test_public_surface) -> its labels."""
    found: dict[str, tuple[str, ...]] = {}
    for name, (kind, labels) in {**BRIDGE_METRICS, **REDIS_METRICS, **WORKER_METRICS}.items():
        if kind == "counter":
            found[f"{name}_total"] = labels
        elif kind == "histogram":
            found[f"{name}_bucket"] = (*labels, "le")
            found[f"{name}_sum"] = found[f"{name}_count"] = labels
        else:
            found[name] = labels
    return found


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


def selectors(expr: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """``(metric, [(label, op, value), ...])`` of each metric selector in a PromQL query."""
    for m in SELECTOR.finditer(expr):
        body = m.group(2) or ""
        matchers = MATCHER.findall(body)
        assert "".join(MATCHER.sub("", body).split()) == "", f"unparsed matchers in {expr!r}"
        yield m.group(1), matchers


def selected(matchers: list[tuple[str, str, str]], label: str, values: tuple[str, ...]) -> set[str]:
    """The values of ``label`` that ``matchers`` let through."""
    keep = set(values)
    for name, op, value in matchers:
        if name != label:
            continue
        if op in ("=", "!="):
            hit = {v for v in values if v == value}
        else:
            hit = {v for v in values if re.fullmatch(value, v)}
        keep &= hit if op in ("=", "=~") else set(values) - hit
    return keep


def dead_letters_counted(expr: str) -> set[tuple[str, str]]:
    """The kinds of dead letter one query counts: ``(metric, value of its telling label)``."""
    kinds = set()
    for name, matchers in selectors(expr):
        if name in DEAD_LETTER_KINDS:
            label, values = DEAD_LETTER_KINDS[name]
            kinds |= {(name, v) for v in selected(matchers, label, values)}
    return kinds


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def test_every_query_names_pinned_metrics_and_their_labels(exprs: list[str]) -> None:
    known = sample_labels()
    for expr in exprs:
        found = list(selectors(expr))
        assert found, f"no bridge metric in {expr!r}"
        for name, matchers in found:
            assert name in known, f"{name} is not a metric of the code ({expr!r})"
            allowed = {*known[name], *SCRAPE_LABELS}
            unknown = {label for label, _, _ in matchers} - allowed
            assert not unknown, f"{name} has no label {sorted(unknown)} ({expr!r})"


def test_every_query_follows_the_job_and_instance_variables(
    dashboard: dict[str, Any], exprs: list[str]
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in SCRAPE_LABELS:
        var = variables[name]
        assert (var["type"], var["multi"], var["includeAll"]) == ("query", True, True)
        assert var["allValue"] == ".*"  # "All" matches a label whatever its values
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert 'job=~"$job"' in variables["instance"]["definition"]  # instances of the jobs chosen
    for expr in exprs:
        for name, matchers in selectors(expr):
            assert ("job", "=~", "$job") in matchers, f"{name} ignores $job in {expr!r}"
            assert ("instance", "=~", "$instance") in matchers, f"{name}: $instance, {expr!r}"


def test_no_panel_counts_a_deferred_dead_letter_twice(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        counted: set[tuple[str, str]] = set()
        for target in panel["targets"]:
            kinds = dead_letters_counted(target["expr"])
            assert not kinds & counted, f"{panel['title']}: {sorted(kinds & counted)} twice"
            counted |= kinds
        assert not counted >= DEFERRED_TWICE, f"{panel['title']} counts deferred ones twice"


def test_one_panel_counts_every_dead_letter_once(dashboard: dict[str, Any]) -> None:
    totals = [p for p in panels(dashboard) if p["title"] == "Dead letters per second"]
    assert len(totals) == 1
    counted = set().union(*(dead_letters_counted(t["expr"]) for t in totals[0]["targets"]))
    assert counted == EVERY_DEAD_LETTER_ONCE


@pytest.mark.parametrize(
    ("title", "metrics"),
    [
        ("Assigned partitions", {"bridge_assigned_partitions"}),
        ("Flood breaker state", {"bridge_flood_breaker_state"}),
        ("Dead-lettered share in the breaker's window", {"bridge_flood_dead_letter_ratio"}),
        ("Breaker trips", {"bridge_flood_breaker_trips_total"}),
    ],
)
def test_panels_of_the_breaker_and_the_assigned_partitions(
    dashboard: dict[str, Any], title: str, metrics: set[str]
) -> None:
    [panel] = [p for p in panels(dashboard) if p["title"] == title]
    used = {name for t in panel["targets"] for name, _ in selectors(t["expr"])}
    assert used == metrics


def test_the_matcher_reading_of_the_old_dead_letter_panel_finds_the_double_count() -> None:
    # The panel before this test: the bridge's writes summed over `deferred`, next to every
    # worker result.
    old = [
        "sum by (reason) (rate(bridge_dead_letters_total[$__rate_interval]))",
        "sum by (reason, result) (rate(bridge_worker_dead_letter_writes_total[1m]))",
    ]
    counted = set().union(*(dead_letters_counted(e) for e in old))
    assert counted >= DEFERRED_TWICE
    assert dead_letters_counted('x{deferred!="true"} + y') == set()
    assert dead_letters_counted('bridge_dead_letters_total{deferred=~"f.*"}') == {
        ("bridge_dead_letters_total", "false")
    }
    worker = 'bridge_worker_dead_letter_writes_total{result!~"deferred|failed"}'
    assert {v for _, v in dead_letters_counted(worker)} == {"written", "refused"}
