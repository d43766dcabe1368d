"""Replay decisions over dead-letter headers, without services."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.deadletter import DeadLetter, ErrorInfo, dead_letter_headers
from bridge.errors import ReplayError
from bridge.failures import Reason
from bridge.ops.replay_headers import DeadView, Origin, replay_count, replayed_headers
from bridge.ops.replay_plan import (
    Decision,
    ReplayFilter,
    Summary,
    Verdict,
    build_filter,
    describe,
    parse_time,
    plan,
    replay_task_id,
    select_dlt,
    task_route,
)
from bridge.record import Headers, Record, TimestampType
from bridge.routing import Route, Router

ORIGINAL: Headers = (("ledger", b"x"), ("bin", b"\x00\xff"), ("bin", b""), ("e", b""))


def dead(
    headers: Headers = ORIGINAL,
    *,
    key: bytes | None = b"k1",
    reason: Reason = Reason.EXHAUSTED,
    error: ErrorInfo | None = None,
    at: str = "2026-11-22T10:00:07.000Z",
) -> DeadView:
    record = Record("orders", 2, 41, 1_700_000_000_123, key, b"v", headers, "bytes")
    dl = DeadLetter(
        record=record,
        group_id="shop",
        dlt_topic="orders.shop.dlt",
        reason=reason,
        error=error or ErrorInfo("builtins.TimeoutError", "slow", "Traceback…"),
        attempts=4,
        task="shop.handle_order",
        task_id="shop:orders:2:41",
        first_failure_at="2026-11-22T10:00:00.000Z",
        dead_lettered_at=at,
    )
    return DeadView(tuple(dead_letter_headers(dl)), key, 1_800_000_000_000)


def test_the_original_headers_are_split_off_byte_exact() -> None:
    parts = dead().split()
    assert parts is not None
    original, added = parts
    assert original == ORIGINAL
    assert added[0][0] == "kafka_dlt-original-topic"
    assert {name for name, _ in added} >= {"bridge-reason", "bridge-dead-lettered-at"}


def test_an_earlier_dead_letters_origin_stays_among_the_originals_its_failure_goes() -> None:
    # A record that came from another DLT: as Spring does by default, its earlier failure's
    # headers are replaced, its earlier origin kept; only the last dead-lettering's headers go.
    origin = ("kafka_dlt-original-topic", b"upstream")
    earlier = (*ORIGINAL, origin, ("bridge-reason", b"x"))
    parts = dead(earlier).split()
    assert parts is not None
    assert parts[0] == (*ORIGINAL, origin)
    assert dead(earlier).text("kafka_dlt-original-topic") == "orders"


def test_a_record_without_dead_letter_headers_is_unreplayable() -> None:
    view = DeadView(ORIGINAL, b"k")
    assert view.split() is None
    assert plan(view, ReplayFilter(), 3).verdict is Verdict.UNREPLAYABLE


def test_origin_reads_spring_encodings() -> None:
    assert dead().origin() == Origin("orders", 2, 41, 1_700_000_000_123, "shop")


@pytest.mark.parametrize(
    ("written", "kind"),
    [
        (b"LogAppendTime", TimestampType.LOG_APPEND_TIME),
        (b"NoTimestampType", TimestampType.NO_TIMESTAMP_TYPE),
        (None, TimestampType.CREATE_TIME),  # a dead letter written before the header was
        (b"Sometime", TimestampType.CREATE_TIME),
    ],
)
def test_origin_reads_the_timestamp_type(written: bytes | None, kind: TimestampType) -> None:
    headers = tuple(
        (name, written if name == "kafka_dlt-original-timestamp-type" else value)
        for name, value in dead().headers
        if written is not None or name != "kafka_dlt-original-timestamp-type"
    )
    origin = DeadView(headers, b"k1").origin()
    assert origin is not None
    assert origin.timestamp_type is kind


def test_replayed_headers_keep_the_originals_and_count_one_more() -> None:
    decision = plan(dead(), ReplayFilter(), 3)
    assert decision.verdict is Verdict.REPLAY
    assert decision.replays == 1
    assert decision.headers == (*ORIGINAL, ("bridge-replays", b"1"))
    assert not any(n.startswith("kafka_dlt-") for n, _ in decision.headers)


def test_an_earlier_replay_count_is_replaced_not_repeated() -> None:
    headers = (("ledger", b"x"), ("bridge-replays", b"2"), ("e", b""))
    decision = plan(dead(headers), ReplayFilter(), 3)
    assert decision.replays == 3
    assert decision.headers == (("ledger", b"x"), ("e", b""), ("bridge-replays", b"3"))


@pytest.mark.parametrize(
    ("headers", "count"),
    [
        ((), 0),
        ((("bridge-replays", b"2"),), 2),
        ((("bridge-replays", b"1"), ("bridge-replays", b"4")), 4),
        ((("bridge-replays", b"many"),), 0),
        ((("bridge-replays", b"\xff"),), 0),
        ((("bridge-replays", b"-3"),), 0),
    ],
)
def test_replay_count(headers: Headers, count: int) -> None:
    assert replay_count(headers) == count


def test_the_replay_limit_stops_a_record_that_keeps_failing() -> None:
    at_limit = plan(dead((("bridge-replays", b"3"),)), ReplayFilter(), 3)
    assert at_limit.verdict is Verdict.LIMITED
    assert at_limit.replays == 3
    below = plan(dead((("bridge-replays", b"2"),)), ReplayFilter(), 3)
    assert below.verdict is Verdict.REPLAY


def test_replayed_headers_put_the_count_last() -> None:
    assert replayed_headers((("a", b"1"),), 7) == (("a", b"1"), ("bridge-replays", b"7"))


def test_filter_by_reason() -> None:
    flt = ReplayFilter(reasons=frozenset({"non-retryable"}))
    assert not flt.matches(dead(reason=Reason.EXHAUSTED))
    assert flt.matches(dead(reason=Reason.NON_RETRYABLE))
    assert plan(dead(), flt, 3).verdict is Verdict.FILTERED


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        ("builtins.TimeoutError", True),
        ("TimeoutError", True),
        ("ValueError", False),
        ("builtins.Timeout", False),
        ("other.TimeoutError", False),
    ],
)
def test_filter_by_exception_fully_qualified_or_by_class_name(wanted: str, matches: bool) -> None:
    assert ReplayFilter(exceptions=frozenset({wanted})).matches(dead()) is matches


def test_filter_by_key() -> None:
    assert ReplayFilter(key=b"k1").matches(dead(key=b"k1"))
    assert not ReplayFilter(key=b"k1").matches(dead(key=b"k2"))
    assert not ReplayFilter(key=b"k1").matches(dead(key=None))


def test_filter_by_time_over_dead_lettered_at_since_inclusive_until_exclusive() -> None:
    at = datetime(2026, 11, 22, 10, 0, 7, tzinfo=UTC)
    view = dead(at="2026-11-22T10:00:07.000Z")
    assert ReplayFilter(since=at).matches(view)
    assert not ReplayFilter(until=at).matches(view)
    assert ReplayFilter(until=at + timedelta(milliseconds=1)).matches(view)
    assert not ReplayFilter(since=at + timedelta(milliseconds=1)).matches(view)


def test_time_filter_falls_back_to_the_dlt_record_timestamp() -> None:
    view = DeadView((("kafka_dlt-original-topic", b"t"),), None, 1_800_000_000_000)
    stamp = datetime.fromtimestamp(1_800_000_000, UTC)
    assert ReplayFilter(since=stamp).matches(view)
    assert not ReplayFilter(until=stamp).matches(view)
    assert not ReplayFilter(since=stamp).matches(DeadView(view.headers, None, 0))


def test_every_criterion_must_hold() -> None:
    flt = ReplayFilter(reasons=frozenset({"exhausted"}), key=b"other")
    assert not flt.matches(dead())


def test_parse_time_accepts_iso_8601_and_reads_naive_times_as_utc() -> None:
    assert parse_time("2026-11-22T10:00:00Z", "--since") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time("2026-11-22", "--since") == datetime(2026, 11, 22, tzinfo=UTC)
    paris = parse_time("2026-11-22T11:00:00+01:00", "--until")
    assert paris == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert paris.utcoffset() == timezone(timedelta(hours=1)).utcoffset(None)


def test_a_bad_time_names_its_flag() -> None:
    with pytest.raises(ReplayError, match="--until: 'tomorrow' is not an ISO 8601 time"):
        parse_time("tomorrow", "--until")
    with pytest.raises(ReplayError, match="--since/--until"):
        build_filter(since="2026-11-22T10:00:00Z", until="2026-11-22T09:00:00Z")


def test_build_filter_from_flags() -> None:
    flt = build_filter(reasons=["exhausted"], exceptions=["TimeoutError"], key_b64="AP8=")
    assert flt == ReplayFilter(
        reasons=frozenset({"exhausted"}), exceptions=frozenset({"TimeoutError"}), key=b"\x00\xff"
    )
    assert build_filter(key="k1").key == b"k1"
    with pytest.raises(ReplayError, match="--key-b64"):
        build_filter(key_b64="not base64!")


def router() -> Router:
    def route(topic: str, ordered: bool = False) -> Route:
        return Route(topic, "shop.t", "celery", ordered, "json", f"{topic}.shop.dlt")

    return Router([route("orders"), route("payments", ordered=True)])


def test_select_dlt_by_route_or_by_name() -> None:
    assert select_dlt(router(), "orders", None) == "orders.shop.dlt"
    assert select_dlt(router(), None, "any.dlt") == "any.dlt"
    assert select_dlt(router(), None, None, parked=True) is None


@pytest.mark.parametrize(
    ("topic", "dlt", "parked", "to", "message"),
    [
        ("nope", None, False, "source", "--topic: 'nope' is not a routed topic"),
        (None, None, False, "source", "--topic or --dlt-topic"),
        ("payments", None, False, "task", "--to task: route payments is ordered"),
        (None, "payments.shop.dlt", False, "task", "--to task: route payments is ordered"),
    ],
)
def test_select_dlt_refuses(
    topic: str | None, dlt: str | None, parked: bool, to: str, message: str
) -> None:
    with pytest.raises(ReplayError, match=message):
        select_dlt(router(), topic, dlt, parked=parked, to=to)


def test_task_route_only_for_unordered_routed_topics() -> None:
    origin = Origin("orders", 0, 1, 0, "shop")
    assert task_route(router(), origin) is not None
    assert task_route(router(), Origin("payments", 0, 1, 0, "shop")) is None
    assert task_route(router(), Origin("elsewhere", 0, 1, 0, "shop")) is None


def test_replay_task_id_differs_from_the_deterministic_one_and_between_replays() -> None:
    origin = Origin("orders", 2, 41, 0, "shop")
    assert replay_task_id("shop", origin, 1) == "shop:orders:2:41:replay:1"
    assert replay_task_id("shop", origin, 2) == "shop:orders:2:41:replay:2"


def test_summary_counts_each_verdict() -> None:
    summary = Summary()
    for verdict in [Verdict.REPLAY, Verdict.REPLAY, Verdict.FILTERED, Verdict.LIMITED,
                    Verdict.UNREPLAYABLE]:  # fmt: skip
        summary.count(Decision(verdict))
    doc = summary.to_dict()
    assert doc["read"] == 5
    assert doc["matched"] == 3
    assert (doc["skipped_by_filter"], doc["skipped_by_limit"], doc["unreplayable"]) == (1, 1, 1)
    assert doc["replayed"] == 0  # counted once written, not when decided
    assert "would_replay" not in doc


def test_describe_lists_binary_keys_as_base64() -> None:
    view = dead(key=b"\xff")
    line = describe(view, plan(view, ReplayFilter(), 3))
    assert line["key_b64"] == "/w=="
    assert (line["topic"], line["partition"], line["offset"]) == ("orders", 2, 41)
    assert line["replays"] == 1
    assert struct.unpack(">q", view.header("kafka_dlt-original-offset") or b"")[0] == 41


def test_since_and_until_flags_bound_the_filter_they_build() -> None:
    flt = build_filter(since="2026-11-22T10:00:00Z", until="2026-11-22T10:00:07Z")
    assert (flt.since, flt.until) == (
        datetime(2026, 11, 22, 10, tzinfo=UTC), datetime(2026, 11, 22, 10, 0, 7, tzinfo=UTC),
    )  # fmt: skip
    assert flt.matches(dead(at="2026-11-22T10:00:06.999Z"))
    assert not flt.matches(dead(at="2026-11-22T10:00:07.000Z"))  # --until is exclusive
    assert not flt.matches(dead(at="2026-11-22T09:59:59.999Z"))  # a dropped --since takes it


def test_exception_flags_select_by_the_dead_letters_exception() -> None:
    flt = build_filter(exceptions=["TimeoutError", "KeyError"])
    assert flt.matches(dead())
    assert not flt.matches(dead(error=ErrorInfo("builtins.ValueError", "bad", "")))
    assert not flt.matches(DeadView((("kafka_dlt-original-topic", b"t"),), b"k1"))  # none named


def test_a_key_b64_with_foreign_characters_is_refused_not_stripped() -> None:
    with pytest.raises(ReplayError, match="--key-b64"):
        build_filter(key_b64="AP8=\n!")  # decoded leniently: b"\x00\xff", a wrong key


def test_describe_names_every_field_of_a_dead_letter() -> None:
    view = dead(key=b"k1", reason=Reason.NON_RETRYABLE)
    assert describe(view, plan(view, ReplayFilter(), 3)) == {
        "topic": "orders",
        "partition": 2,
        "offset": 41,
        "key": "k1",
        "reason": "non-retryable",
        "exception": "builtins.TimeoutError",
        "dead_lettered_at": "2026-11-22T10:00:07.000Z",
        "replays": 1,
    }


def test_describe_an_unreplayable_record_without_a_key() -> None:
    view = DeadView(ORIGINAL, None)
    line = describe(view, plan(view, ReplayFilter(), 3))
    assert line == {
        "topic": None, "partition": None, "offset": None, "key": None, "reason": None,
        "exception": None, "dead_lettered_at": None, "replays": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"since": "soon"}, r"^--since: 'soon' is not an ISO 8601 time \(e\.g\. 2026-11-22T10:"),
        ({"until": "later"}, "^--until: 'later' is not"),
        ({"since": "2026-11-22", "until": "2026-11-22"}, "^--since/--until: 2026-11-22 is not"),
        ({"key_b64": "***"}, r"^--key-b64: '\*\*\*' is not base64$"),
    ],
)
def test_each_bad_flag_is_named(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        build_filter(**flags)


def without(view: DeadView, *names: str) -> DeadView:
    """``view`` less the headers ``names``."""
    return DeadView(tuple(h for h in view.headers if h[0] not in names), view.key)


@pytest.mark.parametrize(
    "missing",
    ["kafka_dlt-original-partition", "kafka_dlt-original-offset", "kafka_dlt-original-topic"],
)
def test_without_its_place_a_dead_letter_is_unreplayable(missing: str) -> None:
    view = without(dead(), missing)
    assert view.origin() is None
    assert plan(view, ReplayFilter(), 3) == Decision(
        Verdict.UNREPLAYABLE, why="no kafka_dlt-original-* headers"
    )


def test_origin_defaults_when_the_timestamp_and_group_are_missing() -> None:
    view = without(dead(), "kafka_dlt-original-timestamp", "kafka_dlt-original-consumer-group")
    assert view.origin() == Origin("orders", 2, 41, 0, "")


def test_origin_keeps_kafkas_minus_one_timestamp() -> None:
    stamp = struct.pack(">q", -1)
    headers = tuple(
        (n, stamp if n == "kafka_dlt-original-timestamp" else v) for n, v in dead().headers
    )
    origin = DeadView(headers, b"k1").origin()
    assert origin is not None
    assert origin.timestamp_ms == -1


def test_filtered_and_limited_decisions_say_where_and_why() -> None:
    view = dead((("bridge-replays", b"3"),))
    origin = view.origin()
    assert plan(view, ReplayFilter(key=b"other"), 3) == Decision(Verdict.FILTERED, origin)
    assert plan(view, ReplayFilter(), 3) == Decision(
        Verdict.LIMITED, origin, replays=3, why="replayed 3 times already (--max-replays 3)"
    )


@pytest.mark.parametrize(
    ("fqcn", "wanted", "matches"),
    [
        ("requests.exceptions.ConnectTimeout", "ConnectTimeout", True),
        ("requests.exceptions.ConnectTimeout", "exceptions.ConnectTimeout", False),
        ("Oops", "Other", False),  # a class name without a module
        ("Oops", "Oops", True),
    ],
)
def test_filter_by_exception_of_any_depth(fqcn: str, wanted: str, matches: bool) -> None:
    view = dead(error=ErrorInfo(fqcn, "m", ""))
    assert ReplayFilter(exceptions=frozenset({wanted})).matches(view) is matches


def test_select_dlt_defaults_to_source_and_asks_for_a_topic() -> None:
    assert select_dlt(router(), "payments", None) == "payments.shop.dlt"  # ordered: to source
    assert select_dlt(router(), "orders", None, to="task") == "orders.shop.dlt"
    with pytest.raises(ReplayError) as raised:
        select_dlt(router(), None, None)
    assert str(raised.value) == (
        "--topic or --dlt-topic: say which dead-letter topic to replay (or --parked for the "
        "dead letters parked in Redis)"
    )


def test_select_dlt_refusals_say_what_to_do() -> None:
    with pytest.raises(ReplayError) as raised:
        select_dlt(router(), "nope", None)
    assert str(raised.value) == "--topic: 'nope' is not a routed topic (routes: orders, payments)"
    with pytest.raises(ReplayError) as raised:
        select_dlt(Router([]), "nope", None)
    assert str(raised.value).endswith("(routes: none)")
    with pytest.raises(ReplayError) as raised:
        select_dlt(router(), "payments", None, to="task")
    assert str(raised.value) == (
        "--to task: route payments is ordered; its records run only as their key's head: use "
        "--to source"
    )


def test_summary_counts_every_dead_letter_and_lists_them_on_a_dry_run() -> None:
    summary = Summary(dry_run=True)
    for verdict in [Verdict.FILTERED, Verdict.LIMITED, Verdict.UNREPLAYABLE] * 2:
        summary.count(Decision(verdict))
    summary.listed.append({"offset": 41})
    doc = summary.to_dict()
    assert (doc["skipped_by_filter"], doc["skipped_by_limit"], doc["unreplayable"]) == (2, 2, 2)
    assert doc["would_replay"] == [{"offset": 41}]
    assert "listed" not in doc


def test_dead_lettered_at_reads_naive_stamps_as_utc_and_keeps_offsets() -> None:
    assert dead(at="2026-11-22T10:00:07").dead_lettered_at() == datetime(
        2026, 11, 22, 10, 0, 7, tzinfo=UTC
    )
    paris = dead(at="2026-11-22T11:00:07+01:00").dead_lettered_at()
    assert paris is not None
    assert paris.utcoffset() == timedelta(hours=1)
    assert dead(at="not a time").dead_lettered_at() == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    assert DeadView((), None, 0).dead_lettered_at() is None  # neither stamp nor timestamp
