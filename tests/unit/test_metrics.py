"""Metrics: committed-record deltas, per-partition label sets, outcomes, the Grafana dashboard."""

from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.exceptions import Ignore, Reject, Retry
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from bridge.backends.redis.waiting import RedisCounts
from bridge.cli import main
from bridge.consumer.metrics import (
    NO_RETRY,
    BridgeMetrics,
    CommittedRecords,
    RedisGauges,
    redis_families,
)
from bridge.errors import ConfigError
from bridge.hooks import LoopState, PartitionState
from bridge.metrics_server import MetricsServer
from bridge.offsets import Partition
from bridge.settings import load_settings
from bridge.worker.metrics import WorkerMetrics, fresh_multiproc_dir, outcome_of

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana" / "kafka-celery-bridge.json"
A0, A1 = Partition("a", 0), Partition("a", 1)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def state(*partitions: PartitionState) -> LoopState:
    return LoopState("member", "g", 0, False, partitions)


def test_first_commit_counts_from_the_first_accepted_offset_then_deltas() -> None:
    records = CommittedRecords()
    records.accepted({A0: (100, 105), A1: (7, 8)})
    assert records.committed({A0: 105, A1: 8}) == {"a": 6}
    records.accepted({A0: (105, 110)})
    assert records.committed({A0: 110}) == {"a": 5}
    assert records.committed({A0: 110}) == {"a": 0}  # committed again: nothing new


def test_a_revoked_partition_is_forgotten_and_counts_from_its_next_first_accept() -> None:
    records = CommittedRecords()
    records.accepted({A0: (0, 10)})
    assert records.committed({A0: 10}) == {"a": 10}
    records.keep([A1])  # A0 went to another bridge, which committed up to 50
    records.accepted({A0: (50, 52)})
    assert records.committed({A0: 52}) == {"a": 2}


def test_per_partition_gauges_drop_partitions_no_longer_assigned() -> None:
    registry = CollectorRegistry()
    metrics = BridgeMetrics(registry)
    metrics.after_state(
        state(
            PartitionState("a", 0, 5, 3, 9, paused="backpressure"),
            PartitionState("a", 1, 2, 2, 2),
        )
    )
    assert sample(registry, "bridge_consumer_lag_records", topic="a", partition="0") == 4
    assert sample(registry, "bridge_uncommitted_records", topic="a", partition="0") == 2
    paused = {"topic": "a", "partition": "0", "reason": "backpressure"}
    assert sample(registry, "bridge_partition_paused", **paused) == 1
    assert sample(registry, "bridge_assigned_partitions") == 2

    metrics.after_state(state(PartitionState("a", 1, 2, 2, 4, paused="key-full")))
    assert sample(registry, "bridge_consumer_lag_records", topic="a", partition="0") is None
    assert sample(registry, "bridge_uncommitted_records", topic="a", partition="0") is None
    assert sample(registry, "bridge_partition_paused", **paused) is None
    full = {"topic": "a", "partition": "1", "reason": "key-full"}
    assert sample(registry, "bridge_partition_paused", **full) == 1
    assert sample(registry, "bridge_consumer_lag_records", topic="a", partition="1") == 2


def test_the_hooks_count_commits_per_topic() -> None:
    registry = CollectorRegistry()
    metrics = BridgeMetrics(registry)
    metrics.after_poll({A0: 3, A1: 2})
    metrics.after_accept({A0: (10, 13), A1: (0, 2)})
    metrics.after_commit({A0: 13, A1: 2}, 0.004)
    assert sample(registry, "bridge_records_consumed_total", topic="a") == 5
    assert sample(registry, "bridge_records_committed_total", topic="a") == 5
    assert sample(registry, "bridge_commit_duration_seconds_count") == 1
    metrics.after_dead_letter("a", "undecodable", False)
    dead = {"topic": "a", "reason": "undecodable", "deferred": "false"}
    assert sample(registry, "bridge_dead_letters_total", **dead) == 1


def test_redis_families_carry_the_group_and_every_partition() -> None:
    counts = RedisCounts(3, 1, 2, keys_out=4, keys_retrying=1, keys_parked=1,
                         records_waiting={("o", 0): 7})  # fmt: skip
    registry = CollectorRegistry()
    registry.register(_Fixed(redis_families("g", counts)))
    assert sample(registry, "bridge_delayed_retries_waiting", group="g") == 3
    assert sample(registry, "bridge_dead_letters_waiting", group="g", state="parked") == 2
    assert sample(registry, "bridge_ordered_records_waiting", group="g", topic="o",
                  partition="0") == 7  # fmt: skip
    assert all(not f.samples for f in redis_families("g", None))


def test_redis_gauges_read_at_most_once_per_interval_and_survive_redis_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    client = redis.Redis(port=_closed_port(), socket_connect_timeout=0.2, retry=NO_RETRY)
    gauges = RedisGauges(client, "g", ordered=True, interval_s=5, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="bridge.consumer.metrics"):
        assert all(not f.samples for f in gauges.collect())
        now[0] = 4.9
        gauges.collect()
        assert caplog.text.count("not read") == 1  # within the interval: no second read
        now[0] = 5.0
        gauges.collect()
        assert caplog.text.count("not read") == 2


def test_a_busy_metrics_port_is_a_clear_error_naming_the_key() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"metrics.port {port}: cannot listen"):
            MetricsServer(port, "127.0.0.1", CollectorRegistry(), key="metrics.port")


def test_run_refuses_a_bad_or_busy_metrics_port_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "b.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\ngroup_id = "g"\n[celery]\n'
                      'broker_url = "redis://127.0.0.1:1/0"\n[[routes]]\ntopic = "t"\n'
                      'task = "x"\n')  # fmt: skip
    with pytest.raises(SystemExit) as bad:
        main(["run", "--config", str(config), "--metrics-port", "http"])
    assert bad.value.code == 2
    assert "--metrics-port: 'http' is not a port number" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = ["run", "--config", str(config), "--metrics-port", port, "--metrics-addr",
                "127.0.0.1"]  # fmt: skip
        assert main(args) == 2
    assert f"--metrics-port (metrics.port) {port}: cannot listen" in capsys.readouterr().err


def test_metrics_settings_default_off_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.toml"
    path.write_text('[kafka]\nbootstrap_servers = "k:9092"\ngroup_id = "g"\n[celery]\n'
                    'broker_url = "redis://r"\n[metrics]\nport = 9464\n'
                    '[[routes]]\ntopic = "t"\ntask = "x"\n')  # fmt: skip
    conf = load_settings(path).metrics
    assert (conf.port, conf.addr, conf.worker_port) == (9464, "0.0.0.0", 0)
    monkeypatch.setenv("BRIDGE_METRICS__WORKER_PORT", "9465")
    assert load_settings(path).metrics.worker_port == 9465
    monkeypatch.setenv("BRIDGE_METRICS__PORT", "70000")
    with pytest.raises(ConfigError, match=r"metrics.port"):
        load_settings(path)


def test_outcome_of_a_handler_run() -> None:
    assert outcome_of(None, None) == "success"
    assert outcome_of(Retry(), None) == "retry"
    assert outcome_of(Reject("x", requeue=True), "dead-lettered") == "requeued"
    assert outcome_of(Ignore(), None) == "ignored"
    assert outcome_of(ValueError(), "dead-lettered") == "dead-lettered"
    assert outcome_of(ValueError(), None) == "failed"


def test_a_given_multiprocess_dir_is_emptied_of_old_values_only(tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("keep")
    path, made = fresh_multiproc_dir(str(tmp_path))
    assert (path, made) == (tmp_path, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    new, made = fresh_multiproc_dir(None)
    assert made
    assert new.is_dir()
    assert not any(new.iterdir())
    new.rmdir()


def test_dashboard_queries_name_only_metrics_the_code_defines() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    assert len(exprs) >= 12
    names = _defined_sample_names()
    used = {m for e in exprs for m in re.findall(r"\bbridge_[a-z0-9_]+", e)}
    assert used, exprs
    assert used <= names, sorted(used - names)
    datasources = {json.dumps(p.get("datasource")) for p in _panels(dashboard)}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


def _defined_sample_names() -> set[str]:
    registry = CollectorRegistry()
    BridgeMetrics(registry)
    registry.register(_Fixed(redis_families("g", RedisCounts(0, 0, 0, records_waiting={}))))
    WorkerMetrics(registry)
    text = generate_latest(registry).decode()
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    found = set()
    for name, kind in names:
        found.add(name)
        if kind == "histogram":
            found |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return found


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
