"""The status document and its tables (pure: no Kafka, no Redis)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from rich.console import Console

from bridge.backends.redis.ordering import KeyState
from bridge.backends.redis.retries import RetrySummary
from bridge.backends.redis.waiting import RedisCounts
from bridge.backends.redis.worker_registry import Registration
from bridge.hooks import LoopState, PartitionState
from bridge.ops.status import KafkaView, PartitionStatus, RedisView, status_doc
from bridge.ops.status_view import console_for, render
from bridge.routing import Route
from bridge.worker.unroutable import UnroutableCount

NOW_MS = 1_790_000_000_000
ROUTES = [
    Route("orders", "shop.order", "celery", False, "json", "orders.g.dlt"),
    Route("pay", "shop.pay", "pq", True, "json", "pay.g.dlt"),
]


def kafka() -> KafkaView:
    rows = [
        PartitionStatus("orders", 0, 10, 15),
        PartitionStatus("orders", 1, None, 3),
        PartitionStatus("pay", 0, 7, 7),
    ]
    return KafkaView(rows, {"orders.g.dlt": 2, "pay.g.dlt": None})


def held() -> RedisView:
    member = LoopState(
        "bridge@host:1",
        "g",
        NOW_MS - 500,
        False,
        (
            PartitionState("orders", 0, 12, 10, 15, "backpressure"),
            PartitionState("pay", 0, 7, 7, 7),
        ),
    )
    parked = KeyState("pay", b"k1", None, 3, "g:pay:0:4", 9.5, None, {"reason": "exhausted",
                      "parked_at_ms": NOW_MS - 2000})  # fmt: skip
    return RedisView(
        now_ms=NOW_MS,
        members=[member],
        queue_depths={"celery": 5, "pq": 0},
        counts=RedisCounts(4, 1, 1, keys_out=1, keys_parked=1, records_waiting={("pay", 0): 3}),
        retries=RetrySummary(NOW_MS + 1500, NOW_MS + 60_000, 0),
        dead_letters_next_attempt_ms=NOW_MS + 1000,
        dead_letters_parked_sample=[
            {
                "task_id": "g:orders:1:0",
                "task": "shop.order",
                "reason": "exhausted",
                "error": {"fqcn": "builtins.TimeoutError"},
                "dead_lettered_at": "2026-01-01T00:00:00Z",
            }
        ],
        keys_parked=[parked],
        consumers={"celery": 2, "pq": 0},
    )


def test_the_document_joins_kafka_offsets_with_what_running_bridges_and_redis_say() -> None:
    doc = status_doc("g", ROUTES, kafka(), held())
    assert json.loads(json.dumps(doc)) == doc
    orders, pay = doc["routes"]
    assert (orders["lag"], orders["queue_depth"], orders["dlt_records"]) == (5 + 3, 5, 2)
    assert pay["dlt_records"] is None
    p0, p1 = orders["partitions"]
    assert p0 == {"partition": 0, "committed": 10, "end": 15, "lag": 5,
                  "owner": "bridge@host:1", "paused": "backpressure", "uncommitted": 2}  # fmt: skip
    assert (p1["owner"], p1["paused"], p1["lag"]) == (None, None, 3)
    assert doc["retries"]["next_due_in_s"] == 1.5
    assert doc["dead_letters"]["pending"] == 1
    assert doc["dead_letters"]["parked_sample"][0]["error"] == "builtins.TimeoutError"
    [key] = doc["ordered"]["keys_parked"]
    assert (key["key"], key["depth"], key["parked_for_s"]) == ("k1", 3, 2.0)
    assert doc["bridges"][0]["partitions"] == ["orders[0]", "pay[0]"]


def test_without_redis_or_kafka_the_document_says_why_and_keeps_the_rest() -> None:
    doc = status_doc("g", ROUTES, kafka(), None, ["Redis unreachable: x"])
    assert doc["errors"] == ["Redis unreachable: x"]
    assert doc["retries"] is None
    assert doc["routes"][0]["partitions"][0]["owner"] is None
    no_kafka = status_doc("g", ROUTES, None, held(), ["Kafka unreachable"])
    assert no_kafka["routes"][0]["lag"] is None
    assert no_kafka["routes"][0]["partitions"] == []


def test_the_tables_render_every_part() -> None:
    out = io.StringIO()
    render(status_doc("g", ROUTES, kafka(), held()), Console(file=out, width=220))
    text = out.getvalue()
    for expected in ("1 bridge(s) running", "paused: backpressure", "no bridge", "consuming",
                     "delayed retries waiting in Redis: 4", "1 parked", "g:orders:1:0",
                     "parked ordered keys", "k1", "exhausted"):  # fmt: skip
        assert expected in text, expected


def test_status_written_to_a_pipe_is_not_cut_to_80_columns() -> None:
    long_topic = "orders-" + "x" * 120  # a route row far wider than 80 columns
    routes = [Route(long_topic, "shop.order", "celery", False, "json", f"{long_topic}.g.dlt")]
    out = io.StringIO()  # not a terminal
    render(status_doc("g", routes, None, None, ["Kafka unreachable"]), console_for(out, {}))
    assert f"{long_topic}.g.dlt" in out.getvalue()
    assert "…" not in out.getvalue()


def test_a_terminal_or_columns_keeps_rich_s_width() -> None:
    assert console_for(io.StringIO(), {"COLUMNS": "100"}).width == 100


def test_routes_show_their_unroutable_records_and_workers_that_do_not_run_their_task() -> None:
    redis_view = held()
    workers = [Registration("w1@h", ("celery",), ("shop.other",), ("shop.pay",), NOW_MS),
               Registration("w2@h", ("pq",), (), ("shop.pay",), NOW_MS)]  # fmt: skip
    last = {
        "task": "shop.order",
        "task_id": "g:orders:0:3",
        "worker": "w1@h",
        "error": "task 'shop.order' is not registered",
        "at": "2026-01-01T00:00:00.000Z",
    }
    view = replace(redis_view, workers=workers,
                   unroutable={"orders": UnroutableCount(3, last)})  # fmt: skip
    doc = status_doc("g", ROUTES, kafka(), view)
    orders, pay = doc["routes"]
    assert orders["unroutable"] == {"records": 3, "last": last}
    assert orders["workers"]["consuming"] == 1
    assert orders["workers"]["registered"] == 0
    assert (
        "shop.order is registered by none of the 1 live worker(s)" in orders["workers"]["problem"]
    )
    assert pay["unroutable"] == {"records": 0, "last": None}
    assert pay["workers"]["not_record_task"] == ["w2@h"]
    assert status_doc("g", ROUTES, kafka(), None)["routes"][0]["unroutable"] is None
    out = io.StringIO()
    render(doc, Console(file=out, width=400))
    text = out.getvalue()
    assert "route orders: 3 record(s) dead-lettered as unroutable" in text
    assert "route pay: task shop.pay is not a RecordTask in worker(s) w2@h" in text


def test_a_routed_queue_without_a_worker_is_a_warning_in_the_document_and_the_tables() -> None:
    doc = status_doc("g", ROUTES, kafka(), held())
    orders, pay = doc["routes"]
    assert (orders["consumers"], pay["consumers"]) == (2, 0)
    [warning] = doc["warnings"]
    assert warning.startswith("no worker on the bridge's transport consumes queue pq (0 waiting)")
    assert "routed from pay" in warning
    assert "bridge.worker.transport.install()" in warning
    out = io.StringIO()
    render(doc, Console(file=out, width=400))
    assert f"warning: {warning}" in out.getvalue()
    assert status_doc("g", ROUTES, kafka(), None)["warnings"] == []  # Redis unread: unknown


def test_status_names_the_primary_the_sentinels_named() -> None:
    doc = status_doc("g", ROUTES, kafka(), replace(held(), primary="10.0.0.2:6380"))
    assert doc["redis_primary"] == "10.0.0.2:6380"
    out = io.StringIO()
    render(doc, Console(file=out, width=220))
    assert "Redis primary (Sentinel): 10.0.0.2:6380" in out.getvalue()
    assert status_doc("g", ROUTES, kafka(), held())["redis_primary"] is None


def test_status_counts_the_replicas_and_warns_when_fewer_than_required() -> None:
    short = status_doc("g", ROUTES, kafka(), replace(held(), replicas=1, replicas_required=2))
    assert short["redis_replicas"] == {"connected": 1, "required": 2}
    assert short["warnings"][-1] == (
        "celery.min_replicas_to_accept is 2 but the primary has 1 connected replica(s): no "
        "batch is accepted (nor its offsets committed) until 2 are connected and acknowledge "
        "writes"
    )
    out = io.StringIO()
    render(short, Console(file=out, width=400))
    assert "Redis replicas: 1 connected, 2 required to accept" in out.getvalue()
    enough = status_doc("g", ROUTES, kafka(), replace(held(), replicas=2, replicas_required=2))
    assert not any("min_replicas_to_accept" in w for w in enough["warnings"])
    single = status_doc("g", ROUTES, kafka(), held())
    assert single["redis_replicas"] == {"connected": 0, "required": 0}
    out = io.StringIO()
    render(single, Console(file=out, width=400))
    assert "Redis replicas" not in out.getvalue()
