import dataclasses

from bridge.consumer.backpressure import Backpressure, Limit, limits_of, to_pause
from bridge.routing import Router
from bridge.settings import BridgeSettings

ORDERS = Limit(queue="q", max_depth=100, resume_depth=50)


def test_holds_at_max_and_releases_at_resume_depth() -> None:
    bp = Backpressure({"orders": ORDERS})
    assert bp.update({"q": 99}) == (set(), set())
    assert bp.update({"q": 100}) == ({"orders"}, set())
    assert bp.held == {"orders"}
    assert bp.update({"q": 51}) == (set(), set())  # hysteresis: still held
    assert bp.update({"q": 50}) == (set(), {"orders"})
    assert bp.held == set()


def test_routes_sharing_a_queue_are_held_by_their_own_limits() -> None:
    bp = Backpressure({"a": ORDERS, "b": Limit("q", max_depth=10, resume_depth=0)})
    assert bp.queues == {"q"}
    assert bp.update({"q": 20}) == ({"b"}, set())
    assert bp.update({"q": 0}) == (set(), {"b"})


def test_unknown_depth_counts_as_empty() -> None:
    bp = Backpressure({"orders": ORDERS, "audit": Limit("a", max_depth=1, resume_depth=0)})
    assert bp.update({}) == (set(), set())
    assert bp.update({"a": 1}) == ({"audit"}, set())
    assert bp.update({}) == (set(), {"audit"})  # its queue is gone: empty


def test_partitions_to_pause() -> None:
    assigned = {("orders", 0), ("orders", 1), ("audit", 0)}
    assert to_pause(assigned, broker_down=False, held_topics=()) == set()
    assert to_pause(assigned, broker_down=False, held_topics={"orders"}) == {
        ("orders", 0),
        ("orders", 1),
    }
    assert to_pause(assigned, broker_down=True, held_topics=()) == assigned


def test_the_limits_of_the_routes_that_have_one() -> None:
    settings = BridgeSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": "k:9092", "group_id": "g"},
            "celery": {"broker_url": "redis://r/0"},
            "routes": [
                {"topic": "a", "task": "t", "queue": "qa", "max_queue_depth": 10},
                {"topic": "b", "task": "t", "queue": "qb", "max_queue_depth": 8,
                 "resume_queue_depth": 3},
                {"topic": "c", "task": "t"},
            ],
        }
    )  # fmt: skip
    a, b, c = Router.from_settings(settings).routes
    assert limits_of([a, b, dataclasses.replace(c, max_queue_depth=None)]) == {
        "a": Limit("qa", max_depth=10, resume_depth=5),  # half, by default
        "b": Limit("qb", max_depth=8, resume_depth=3),
    }
    unset = dataclasses.replace(c, max_queue_depth=4, resume_queue_depth=None)
    assert limits_of([unset]) == {"c": Limit("celery", max_depth=4, resume_depth=0)}
