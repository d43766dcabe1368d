"""Batched routes, the pure parts: what the bridge holds back and cuts, a batch's task id and
its place in the enqueue script, the script's straddles cut again, backpressure in records, and
a batch handler's verdict per record (issue 20)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.backends.redis.enqueue import Batched, EnqueueBatch, Message, Straddle, recut
from bridge.consumer.backpressure import limits_of
from bridge.consumer.gathering import BatchShape, Gathering, cuts, shapes_of
from bridge.errors import BatchFailed, PermanentError
from bridge.offsets import Partition
from bridge.record import Record, batch_repr, batch_task_id
from bridge.routing import Route
from bridge.sections.routes import RouteSettings
from bridge.worker.batch_outcomes import Replay, failure_of, run_batch

B, S = Partition("b", 0), Partition("s", 0)  # a batched topic, a single-record one


def polled(tp: Partition, *offsets: int) -> list[Any]:
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o) for o in offsets]


def offsets(records: Sequence[Any]) -> list[int]:
    return [r.offset for r in records]


def gathering(size: int = 3, wait_s: float = 0.1) -> Gathering:
    return Gathering({"b": BatchShape(size, wait_s)})


# -- holding back and cutting ------------------------------------------------------------------


def test_full_batches_go_at_once_and_the_tail_waits() -> None:
    g = gathering()
    ready = g.take({B: polled(B, 0, 1, 2, 3, 4), S: polled(S, 7)}, now_s=10.0)
    assert offsets(ready[B]) == [0, 1, 2]
    assert offsets(ready[S]) == [7]  # a single-record route never waits
    assert g.held == 2
    assert g.due_in_s(10.05) == pytest.approx(0.05)


def test_a_tail_goes_once_its_oldest_record_waited_max_wait() -> None:
    g = gathering()
    g.take({B: polled(B, 0, 1)}, now_s=10.0)
    assert g.take({B: polled(B, 2, 3)}, now_s=10.05) == {B: polled(B, 0, 1, 2)}
    assert g.take({}, now_s=10.09) == {}  # offset 3 was polled at 10.05
    assert offsets(g.take({}, now_s=10.16)[B]) == [3]
    assert g.held == 0
    assert g.due_in_s(10.2) is None


def test_a_flush_takes_everything_held() -> None:
    g = gathering(size=10, wait_s=60)
    g.take({B: polled(B, 0, 1)}, now_s=1.0)
    assert offsets(g.take({}, now_s=1.0, flush=True)[B]) == [0, 1]


def test_no_wait_publishes_partial_batches_at_once() -> None:
    g = gathering(size=10, wait_s=0)
    assert offsets(g.take({B: polled(B, 4, 5)}, now_s=1.0)[B]) == [4, 5]


def test_a_seek_forgets_what_is_fetched_again_and_a_revoke_everything() -> None:
    g = gathering(size=10)
    g.take({B: polled(B, 0, 1, 2, 3)}, now_s=1.0)
    g.trim(B, 2)  # sent back to 2: 2 and 3 come again
    assert g.held == 2
    g.trim(B, 9)  # sent on past them: nothing held is fetched again
    assert g.held == 2
    g.forget([B])
    assert g.held == 0
    g.trim(B, 0)  # nothing held: nothing to do


def test_only_batched_routes_have_a_shape() -> None:
    routes = [route(batch_size=1), route(topic="b", batch_size=5, batch_max_wait_ms=250)]
    assert shapes_of(routes) == {"b": BatchShape(5, 0.25)}


def test_cuts_are_runs_of_consecutive_decodable_records() -> None:
    records = polled(B, *range(8))
    ok = [True, True, True, False, True, True, True, True]
    assert [(good, offsets(run)) for good, run in cuts(records, 3, ok)] == [
        (True, [0, 1, 2]),
        (False, [3]),  # alone: the bridge dead-letters it
        (True, [4, 5, 6]),
        (True, [7]),
    ]
    assert cuts([], 3, []) == []


# -- task ids and the enqueue script -----------------------------------------------------------


def test_a_batch_task_id_names_its_first_and_last_record() -> None:
    assert batch_task_id("g", "t", 2, 10, 19) == "g:t:2:10-19"
    assert batch_repr("t", 2, 10, 19, 10) == "Records(t[2]@10..19, 10 records)"


def batch_message(first: int, last: int, queue: str = "q") -> Message:
    def again(mark: int) -> Message:
        return batch_message(mark, last, queue) if mark < last else Message("b", 0, last, queue,
                                                                            b"one")  # fmt: skip

    return Message("b", 0, last, queue, b"batch", batch=Batched(first, last - first + 1, again))


def test_a_batch_is_one_message_of_kind_3_with_its_first_offset_and_count() -> None:
    b = EnqueueBatch("g", None)
    b.add(batch_message(10, 14))
    b.add(Message("b", 0, 15, None, None))
    assert b.args(60, 0) == [1, 60, 1, 0, 0, 1, 14, 3, 1, 10, 5, b"batch", 1, 15, 0, 0, 0, 0, b""]
    assert (batch_message(10, 14).first, batch_message(10, 14).record_count) == (10, 5)
    assert (Message("b", 0, 3, "q", b"x").first, Message("b", 0, 3, "q", b"x").record_count) == (
        3,
        1,
    )


def test_straddles_are_read_apart_from_refusals() -> None:
    b = EnqueueBatch("g", None)
    b.add(batch_message(10, 14))
    flat = [1, 10, 4, 12]
    assert b.straddles(flat) == [Straddle("b", 0, 10, 12)]
    assert b.refusals(flat) == ()


def test_a_straddling_batch_is_cut_at_its_watermark_and_the_rest_follows() -> None:
    messages = [
        Message("a", 0, 3, "q", b"a3"),  # another partition: was enqueued
        batch_message(10, 14),
        batch_message(15, 19),
    ]
    again, skipped = recut(messages, [Straddle("b", 0, 10, 12)])
    assert [(m.first, m.offset) for m in again] == [(12, 14), (15, 19)]
    assert skipped == 2  # 10 and 11 were enqueued in another batch


# -- backpressure counts records ----------------------------------------------------------------


def route(topic: str = "t", **options: Any) -> Route:
    base: dict[str, Any] = {"topic": topic, "task": "x", "queue": "q", "ordered": False,
                            "value_format": "json", "dlt_topic": "d"}  # fmt: skip
    return Route(**{**base, **options})


def test_a_batched_route_counts_each_message_as_a_full_batch() -> None:
    [limit] = limits_of(
        [route(max_queue_depth=1000, resume_queue_depth=500, batch_size=100)]
    ).values()
    assert (limit.max_depth, limit.resume_depth) == (10, 5)
    [limit] = limits_of([route(max_queue_depth=50, resume_queue_depth=10, batch_size=100)]).values()
    assert (limit.max_depth, limit.resume_depth) == (1, 0)  # one message at least
    [limit] = limits_of([route(max_queue_depth=10, resume_queue_depth=5)]).values()
    assert (limit.max_depth, limit.resume_depth) == (10, 5)


def test_ordered_routes_may_be_batched() -> None:
    assert RouteSettings(topic="t", task="x", ordered=True, batch_size=10).batch_size == 10
    assert RouteSettings(topic="t", task="x", ordered=True).batch_size == 1
    with pytest.raises(ValidationError):
        RouteSettings(topic="t", task="x", batch_size=0)


# -- a batch handler's verdict -----------------------------------------------------------------


def records(*offs: int) -> list[Record]:
    return [Record(topic="t", partition=0, offset=o, timestamp_ms=0, key=None, raw_value=b"1")
            for o in offs]  # fmt: skip


def test_a_handler_that_returns_succeeded_for_every_record() -> None:
    assert run_batch(records(1, 2), lambda batch: None) == ({}, [])
    assert run_batch([], lambda batch: _raise(AssertionError("ran"))) == ({}, [])


def test_batch_failed_names_the_records_that_failed_each_with_its_exception() -> None:
    one, two, three = records(1, 2, 3)
    timeout, bad = TimeoutError("slow"), PermanentError("bad")

    def handler(batch: list[Record]) -> None:
        raise BatchFailed({batch[0]: timeout, batch[2]: bad})

    failed, strangers = run_batch([one, two, three], handler)
    assert {where: r.exc for where, r in failed.items()} == {("t", 0, 1): timeout,
                                                            ("t", 0, 3): bad}  # fmt: skip
    assert strangers == []


def test_records_named_that_are_not_in_the_batch_are_set_apart() -> None:
    [one] = records(1)
    [other] = records(9)
    failed, strangers = run_batch([one], lambda b: _raise(BatchFailed([(other, ValueError())])))
    assert failed == {}
    assert strangers == [other]


def test_an_exception_escaping_the_handler_fails_every_record() -> None:
    boom = ConnectionError("down")
    failed, _ = run_batch(records(1, 2), lambda b: _raise(boom))
    assert [r.exc for r in failed.values()] == [boom, boom]


def test_passthrough_exceptions_are_raised_as_they_are() -> None:
    with pytest.raises(KeyError):
        run_batch(records(1), lambda b: _raise(KeyError("x")), (KeyError,))


def test_a_replay_raises_the_failure_with_its_own_traceback() -> None:
    try:
        _raise(TimeoutError("slow"))
    except TimeoutError as exc:
        replay = Replay.of(exc)
    depth = _depth(replay.traceback)
    for _ in range(3):
        with pytest.raises(TimeoutError):
            replay.throw()
    with pytest.raises(TimeoutError) as again:
        replay.throw()
    assert _depth(again.value.__traceback__) <= depth + 2  # not lengthened by each raise


def test_failure_of_a_batch_of_one() -> None:
    [one] = records(4)
    exc = ValueError("x")
    assert failure_of(one, BatchFailed({one: exc})) is exc
    assert failure_of(one, BatchFailed({})) is None


def _raise(exc: BaseException) -> None:
    raise exc


def _depth(tb: Any) -> int:
    n = 0
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n
