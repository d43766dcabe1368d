"""Routing, offsets, backoff and failure classification: no services involved."""

import json

import pytest
from pydantic import BaseModel, ValidationError

from bridge.backends.redis.messages import DeliveryTags
from bridge.backoff import exponential_ms
from bridge.errors import PermanentError, UndecodableRecordError
from bridge.failures import Reason, chain, is_non_retryable, reason_for
from bridge.offsets import OffsetTracker, Partition
from bridge.routing import Router
from bridge.settings import BridgeSettings

P0 = Partition("orders", 0)
P1 = Partition("orders", 1)


def settings() -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "b:9092", "group_id": "shop"},
            "celery": {"broker_url": "redis://r/0"},
            "routes": [
                {"topic": "orders", "task": "shop.order"},
                {
                    "topic": "audit",
                    "task": "shop.audit",
                    "queue": "slow",
                    "dlt_topic": "audit-dead",
                },
            ],
        }
    )


def test_router_carries_every_route_setting() -> None:
    limits = {"max_queue_depth": 40, "resume_queue_depth": 30, "max_waiting_per_partition": 9}
    data = settings().model_dump()
    data["routes"] = [{"topic": "raw", "task": "shop.raw", "value_format": "bytes", **limits}]
    route = Router.from_settings(BridgeSettings.model_validate(data)).route_for("raw")
    assert (route.task, route.value_format) == ("shop.raw", "bytes")
    assert (route.max_queue_depth, route.resume_queue_depth) == (40, 30)
    assert route.max_waiting_per_partition == 9


def test_router_resolves_routes_and_dlt_names() -> None:
    router = Router.from_settings(settings())
    assert router.topics == ["audit", "orders"]
    assert router.route_for("orders").dlt_topic == "orders.shop.dlt"
    assert router.route_for("audit").dlt_topic == "audit-dead"
    assert router.route_for("audit").queue == "slow"
    with pytest.raises(KeyError):
        router.route_for("unrouted")


def test_offsets_commit_next_offset_of_accepted_prefix() -> None:
    tracker = OffsetTracker()
    assert tracker.to_commit() == {}
    tracker.accept(P0, 0)
    tracker.accept(P0, 1)
    tracker.accept(P1, 10)
    assert tracker.to_commit() == {P0: 2, P1: 11}
    tracker.committed({P0: 2})
    assert tracker.to_commit() == {P1: 11}
    tracker.committed({P1: 11})
    assert tracker.to_commit() == {}


def test_offsets_refuse_going_backwards() -> None:
    tracker = OffsetTracker()
    tracker.accept(P0, 5)
    with pytest.raises(ValueError, match="out of order"):
        tracker.accept(P0, 5)


def test_offsets_forget_revoked_partitions() -> None:
    tracker = OffsetTracker()
    tracker.accept(P0, 5)
    tracker.accept(P1, 5)
    tracker.forget([("orders", 0)])  # kafka-python hands TopicPartition tuples
    assert tracker.to_commit() == {P1: 6}
    assert tracker.position(P0) is None
    tracker.accept(P0, 0)  # a re-assigned partition starts over from its committed offset
    assert tracker.to_commit()[P0] == 1


def test_offsets_committed_never_go_back_and_start_at_zero() -> None:
    tracker = OffsetTracker()
    tracker.committed({P0: 0})
    assert tracker.last_committed(P0) == 0
    tracker.committed({P0: 10})
    tracker.committed({P0: 5})  # a late answer of an earlier commit
    assert tracker.last_committed(P0) == 10
    tracker.accept(P0, 3)
    assert tracker.position(P0) == 4
    assert tracker.to_commit() == {}  # 4 is behind what is committed


def test_offsets_forget_a_partition_that_never_accepted_a_record() -> None:
    tracker = OffsetTracker()
    tracker.accept(P0, 5)
    tracker.committed({P0: 6})
    tracker.forget([("orders", 9), ("orders", 0)])  # assigned, revoked before any record
    assert (tracker.position(P0), tracker.last_committed(P0), tracker.to_commit()) == (
        None, None, {},
    )  # fmt: skip


def test_exponential_backoff_doubles_up_to_the_cap() -> None:
    delays = [exponential_ms(n, initial_ms=100, max_ms=1000) for n in range(1, 7)]
    assert delays == [100, 200, 400, 800, 1000, 1000]
    assert exponential_ms(10_000, initial_ms=100, max_ms=1000) == 1000
    with pytest.raises(ValueError, match="attempt"):
        exponential_ms(0, initial_ms=1, max_ms=1)
    # The exponent stops at 62: an attempt count in the billions builds no huge number.
    assert exponential_ms(10**9, initial_ms=1, max_ms=2**70) == 2**62


class Model(BaseModel):
    n: int


def validation_error() -> ValidationError:
    try:
        Model(n="x")  # type: ignore[arg-type]
    except ValidationError as exc:
        return exc
    raise AssertionError("no error")


def wrapped(inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise RuntimeError("handler failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("no"),
        validation_error(),
        json.JSONDecodeError("bad", "{", 0),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        wrapped(PermanentError("deep")),
        wrapped(validation_error()),
        wrapped(wrapped(PermanentError("two levels down"))),
    ],
)
def test_non_retryable_by_type_or_cause(exc: Exception) -> None:
    assert is_non_retryable(exc)


@pytest.mark.parametrize("exc", [TimeoutError(), ValueError("x"), wrapped(ConnectionError())])
def test_retryable(exc: Exception) -> None:
    assert not is_non_retryable(exc)


def test_chain_visits_each_exception_once_even_in_a_cycle() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert list(chain(a)) == [a, b]


def test_reason() -> None:
    assert reason_for(TimeoutError(), exhausted=True) is Reason.EXHAUSTED
    assert reason_for(ValueError(), exhausted=False) is Reason.NON_RETRYABLE
    assert reason_for(wrapped(UndecodableRecordError("x")), exhausted=False) is Reason.UNDECODABLE
    deep = wrapped(wrapped(UndecodableRecordError("x")))
    assert reason_for(deep, exhausted=True) is Reason.UNDECODABLE


def test_chain_goes_on_past_an_exception_met_twice() -> None:
    top, a, b, root = RuntimeError("top"), ValueError("a"), TypeError("b"), KeyError("root")
    top.__cause__, top.__context__, a.__context__, b.__context__ = a, b, b, root
    assert list(chain(top)) == [top, a, b, root]


def test_chain_follows_causes_before_contexts_and_each_to_the_end() -> None:
    root, cause, context = KeyError("root"), ValueError("cause"), TypeError("context")
    top = RuntimeError("top")
    top.__cause__, top.__context__, cause.__cause__ = cause, context, root
    assert list(chain(top)) == [top, cause, context, root]


def test_before_its_first_commit_a_partition_counts_as_committed_where_it_started() -> None:
    tracker = OffsetTracker()
    tp = Partition("orders", 0)
    assert tracker.last_committed(tp) is None
    tracker.accept(tp, 100)
    tracker.accept(tp, 101)
    assert tracker.last_committed(tp) == 100, "what the group had committed"
    tracker.committed({tp: 102})
    assert tracker.last_committed(tp) == 102
    tracker.forget([tp])
    assert tracker.last_committed(tp) is None


def test_delivery_tags_are_unique_within_and_across_dispatchers() -> None:
    first, second = DeliveryTags(), DeliveryTags()
    tags = [first.next() for _ in range(10_000)] + [second.next() for _ in range(10_000)]
    assert len(set(tags)) == len(tags)
    assert all(isinstance(tag, str) and tag for tag in tags)
