"""The dead-letter flood breaker: its state machine, the outcome arithmetic, and how its state
travels (envelope, loop state, status, metrics), without Kafka or Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.backends.redis.outcomes import stale_fields, tally
from bridge.breaker import BreakerState, FloodBreaker, Outcomes, Transition, level
from bridge.consumer.backpressure import pause_reasons
from bridge.consumer.metrics import BridgeMetrics
from bridge.errors import ConfigError
from bridge.hooks import BreakerReport, LoopState
from bridge.ops.status import _breaker
from bridge.record import Envelope, Record, from_task_arg, to_task_arg
from bridge.routing import Router
from bridge.settings import BreakerSettings, BridgeSettings, load_settings

POLICY = BreakerSettings(
    dead_letter_ratio=0.5, window_s=60, min_records=10, cool_down_s=30, probe_records=4
)


def tripped(now_s: float = 100.0) -> FloodBreaker:
    breaker = FloodBreaker("orders", POLICY)
    assert moved(breaker.observe(Outcomes(handled=2, dead_lettered=9), now_s))[0] == "open"
    return breaker


def moved(change: Transition | None) -> tuple[BreakerState, str]:
    """Where a change of state went, and why (it must have happened)."""
    assert change is not None
    return change.after, change.why


def test_closed_needs_min_records_and_more_than_the_ratio() -> None:
    breaker = FloodBreaker("orders", POLICY)
    assert breaker.observe(Outcomes(handled=0, dead_lettered=9), 1.0) is None  # 9 < min 10
    assert breaker.observe(Outcomes(handled=5, dead_lettered=5), 2.0) is None  # 0.5 is not > 0.5
    change = breaker.observe(Outcomes(handled=4, dead_lettered=6), 3.0)
    assert change is not None
    assert (change.before, change.after, change.why) == (
        BreakerState.CLOSED, BreakerState.OPEN, "dead-letter flood",
    )  # fmt: skip
    assert (breaker.trips, breaker.since_s, breaker.room(), breaker.pausing) == (1, 3.0, 0, True)


def test_open_waits_out_the_cool_down_then_probes_a_budget() -> None:
    breaker = tripped(now_s=100.0)
    assert breaker.observe(Outcomes(), 129.9) is None
    assert moved(breaker.observe(Outcomes(), 130.0)) == ("half-open", "cool-down over: probe")
    assert breaker.counting_since(131.0) == 130.0  # the probe counts from its start
    assert (breaker.room(), breaker.pausing) == (4, False)
    breaker.admitted(3)
    assert breaker.room() == 1
    breaker.admitted(1)
    assert (breaker.room(), breaker.pausing) == (0, True)  # the budget is spent: wait


def test_probe_decides_once_enough_finished() -> None:
    breaker = tripped(now_s=100.0)
    breaker.observe(Outcomes(), 130.0)
    assert breaker.observe(Outcomes(handled=0, dead_lettered=3), 131.0) is None  # 3 < 4
    failed = breaker.observe(Outcomes(handled=1, dead_lettered=3), 132.0)
    assert moved(failed) == ("open", "probe failed")
    assert breaker.trips == 2
    breaker.observe(Outcomes(), 162.0)
    passed = breaker.observe(Outcomes(handled=3, dead_lettered=1), 163.0)
    assert moved(passed) == ("closed", "probe succeeded")
    assert (breaker.room(), breaker.pausing) == (None, False)


def test_a_probe_at_exactly_the_ratio_succeeds() -> None:
    breaker = tripped(now_s=100.0)
    breaker.observe(Outcomes(), 130.0)
    passed = breaker.observe(Outcomes(handled=2, dead_lettered=2), 131.0)  # 0.5 is not > 0.5
    assert moved(passed) == ("closed", "probe succeeded")
    assert (breaker.trips, breaker.since_s) == (1, 131.0)


def test_closed_counts_only_what_finished_since_it_closed() -> None:
    breaker = FloodBreaker("orders", POLICY)
    assert breaker.counting_since(1000.0) == 940.0  # the window
    breaker = tripped(now_s=100.0)
    breaker.resume(110.0)
    assert breaker.counting_since(120.0) == 110.0  # not the flood that opened it
    assert breaker.counting_since(200.0) == 140.0


def test_each_transition_carries_its_route_outcomes_and_ratio() -> None:
    breaker = FloodBreaker("orders", POLICY)
    flood, probe, failed, passed = (Outcomes(2, 9), Outcomes(), Outcomes(1, 3), Outcomes(3, 1))
    assert breaker.observe(flood, 100.0) == Transition(
        "orders", BreakerState.CLOSED, BreakerState.OPEN, flood, "dead-letter flood", 0.5
    )
    assert breaker.resume(101.0) == Transition(
        "orders", BreakerState.OPEN, BreakerState.CLOSED, flood, "resumed by command", 0.5
    )  # the outcomes it last saw
    breaker.observe(flood, 102.0)
    assert breaker.trips == 2  # each trip counts, from closed as from a probe
    change = breaker.observe(probe, 132.0)
    assert (change and change.outcomes) == probe
    change = breaker.observe(failed, 133.0)
    assert (change and change.outcomes, breaker.trips) == (failed, 3)
    breaker.observe(probe, 163.0)
    change = breaker.observe(passed, 164.0)
    assert (change and change.outcomes, breaker.since_s) == (passed, 164.0)


def test_resume_closes_from_open_or_half_open_only() -> None:
    assert FloodBreaker("orders", POLICY).resume(1.0) is None
    breaker = tripped()
    assert moved(breaker.resume(101.0)) == ("closed", "resumed by command")


def test_a_probe_budget_counts_only_in_half_open() -> None:
    breaker = FloodBreaker("orders", POLICY)
    breaker.admitted(1000)
    breaker.observe(Outcomes(handled=1, dead_lettered=10), 1.0)
    breaker.observe(Outcomes(), 31.0)
    assert breaker.room() == 4


def test_a_breaker_needs_a_ratio() -> None:
    with pytest.raises(ValueError, match=r"^a breaker needs breaker\.dead_letter_ratio$"):
        FloodBreaker("orders", BreakerSettings())


def test_outcomes_ratio() -> None:
    assert Outcomes().ratio == 0.0
    assert Outcomes(handled=1, dead_lettered=3).ratio == 0.75
    assert Outcomes(handled=1, dead_lettered=3).finished == 4


def test_tally_counts_from_the_second_of_since_and_drops_nothing_else() -> None:
    fields = {b"h:99": b"5", b"d:99": b"7", b"h:100": b"2", b"d:100": b"1", b"d:101": b"3"}
    assert tally(fields, 100.7) == Outcomes(handled=2, dead_lettered=4)
    assert tally(fields, 0.0) == Outcomes(handled=7, dead_lettered=11)
    assert tally({}, 5.0) == Outcomes()
    assert stale_fields(fields, 100.5) == [b"h:99", b"d:99"]


def test_levels_order_the_states() -> None:
    assert [level(s) for s in ("closed", "half-open", "open", "unknown")] == [0, 1, 2, 0]


def settings(**breaker: object) -> BridgeSettings:
    return BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "k:9092", "group_id": "g"},
            "celery": {"broker_url": "redis://r/0"},
            "routes": [{"topic": "orders", "task": "t"}],
            "breaker": breaker,
        }
    )


def test_the_window_travels_in_the_envelope_only_when_the_breaker_is_on() -> None:
    [off] = Router.from_settings(settings()).routes
    [on] = Router.from_settings(settings(dead_letter_ratio=0.5, window_s=90)).routes
    assert (off.breaker_window_s, on.breaker_window_s) == (None, 90)
    record = Record("orders", 0, 1, 2, b"k", b"{}", (), "json")
    envelope = Envelope(record, "g", "orders.g.dlt", breaker_window_s=90)
    arg = to_task_arg(envelope)
    assert arg["breaker"] == 90
    assert from_task_arg(arg) == envelope
    assert "breaker" not in to_task_arg(Envelope(record, "g", "orders.g.dlt"))


@pytest.mark.parametrize("window", [0, -1, "60", True, 1.5])
def test_a_foreign_breaker_window_is_not_an_envelope(window: object) -> None:
    record = Record("orders", 0, 1, 2, b"k", b"{}", (), "json")
    arg = {**to_task_arg(Envelope(record, "g", "orders.g.dlt")), "breaker": window}
    with pytest.raises(
        Exception, match=f"^not a bridge record envelope: breaker window {window!r}"
    ):
        from_task_arg(arg)
    assert from_task_arg({**arg, "breaker": 1}).breaker_window_s == 1  # a second is a window


def test_an_open_breaker_pauses_its_topic_after_a_broker_outage_only() -> None:
    tps = [("orders", 0), ("orders", 1), ("audit", 0)]
    reasons = pause_reasons(tps, broker_down=False, held_topics={"orders"}, held_partitions={},
                            flooded_topics={"orders"})  # fmt: skip
    assert reasons == {("orders", 0): "dead-letter-flood", ("orders", 1): "dead-letter-flood"}
    down = pause_reasons(tps, broker_down=True, held_topics=(), held_partitions={},
                         flooded_topics={"orders"})  # fmt: skip
    assert set(down.values()) == {"broker-down"}


def report(state: str, trips: int, since_ms: int | None = 5_000) -> BreakerReport:
    return BreakerReport("orders", state, since_ms, trips, 3, 7, 0.7)


def test_loop_state_carries_breakers_through_its_dict() -> None:
    state = LoopState("m", "g", 1, False, (), (report("open", 2),))
    assert LoopState.from_dict(state.to_dict()) == state
    older = {"member": "m", "group_id": "g", "at_ms": 1, "broker_down": False}
    assert LoopState.from_dict(older).breakers == ()


def test_status_shows_the_worst_breaker_of_the_group() -> None:
    members = [
        LoopState("a", "g", 1, False, (), (report("closed", 1, None),)),
        LoopState("b", "g", 1, False, (), (report("open", 2),)),
    ]
    doc = _breaker("orders", members)
    assert doc == {"state": "open", "since": "1970-01-01T00:00:05.000Z", "trips": 2,
                   "handled": 3, "dead_lettered": 7, "dead_letter_ratio": 0.7}  # fmt: skip
    assert _breaker("audit", members) is None


def test_metrics_show_state_ratio_and_trips() -> None:
    registry = CollectorRegistry()
    metrics = BridgeMetrics(registry)
    for trips, state in ((1, "open"), (1, "half-open"), (3, "open")):
        metrics.after_state(LoopState("m", "g", 1, False, (), (report(state, trips),)))
    value = registry.get_sample_value
    assert value("bridge_flood_breaker_state", {"topic": "orders"}) == 2
    assert value("bridge_flood_dead_letter_ratio", {"topic": "orders"}) == 0.7
    assert value("bridge_flood_breaker_trips_total", {"topic": "orders"}) == 3


def test_an_invalid_breaker_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "k:9092"\ngroup_id = "g"\n'
        '[celery]\nbroker_url = "redis://r/0"\n'
        "[breaker]\ndead_letter_ratio = 1.5\nprobe_records = 0\n"
        '[[routes]]\ntopic = "orders"\ntask = "t"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert "breaker.dead_letter_ratio" in str(err.value)
    assert "breaker.probe_records" in str(err.value)
