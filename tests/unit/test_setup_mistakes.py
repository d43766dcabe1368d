"""Workers' setup mistakes (pure parts): start-up refusals, the ``unroutable`` dead letter,
what workers register and what the bridge warns about, and a RecordTask without configuration."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from celery import Celery
from celery.exceptions import NotRegistered, Reject

from bridge import RecordTask
from bridge.backends.redis.worker_registry import Registration, coverage, task_problem
from bridge.consumer.route_watch import RouteWatch, route_problems
from bridge.errors import ConfigError
from bridge.failures import Reason
from bridge.record import Envelope, Record, to_task_arg
from bridge.routing import Route
from bridge.settings import BridgeSettings
from bridge.worker import state as worker
from bridge.worker import transport as worker_transport
from bridge.worker.unroutable import dead_letter, envelope_in, not_a_record_task, not_registered
from tests.conftest import bridge_messages

SETTINGS = BridgeSettings.model_validate(
    {
        "kafka": {"bootstrap_servers": "k:9092", "group_id": "g"},
        "celery": {"broker_url": "redis://r/0"},
        "routes": [{"topic": "audit", "task": "shop.audit"}, {"topic": "o", "task": "shop.o"}],
    }
)
RECORD = Record("orders", 2, 7, 1000, b"k", b"{}", (("h", b"v"),), "json")
ORDERED = Envelope(RECORD, "g", "orders.g.dlt", on_exhausted="dead-letter")


def user_app() -> Celery:
    app = Celery("shop", broker="redis://r/0", set_as_current=False)
    app.conf.update(accept_content=["json"])

    @app.task(base=RecordTask, name="shop.o", shared=False)
    def handle(record: Record) -> None: ...

    @app.task(name="shop.audit", shared=False)
    def audit(record: object) -> None: ...

    return app


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_transport.install()
    monkeypatch.setattr(worker, "_settings", SETTINGS)


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "_settings", None)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)


@pytest.mark.usefixtures("unconfigured")
def test_a_worker_with_record_tasks_and_no_configuration_is_refused_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = user_app()
    [problem] = worker.start_problems(app, ["shop.o"], ["shop.audit"])
    assert problem.startswith(
        "BRIDGE_CONFIG is not set: a worker with RecordTask handlers (shop.o)"
    )
    monkeypatch.setenv("BRIDGE_CONFIG", str(tmp_path / "missing.toml"))
    [problem] = worker.start_problems(app, ["shop.o"], [])
    assert f"configuration file {tmp_path / 'missing.toml'} does not exist" in problem
    assert worker.start_problems(app, [], ["shop.audit"]) == []  # not a bridge worker


@pytest.mark.usefixtures("configured")
def test_a_route_to_a_registered_task_that_is_not_a_record_task_is_refused() -> None:
    problems = worker.start_problems(user_app(), ["shop.o"], ["shop.audit"])
    assert problems == [
        "route audit: task shop.audit is registered here but is not a RecordTask; declare it "
        "with @app.task(base=RecordTask, ...)"
    ]


@pytest.mark.usefixtures("configured")
def test_record_tasks_acknowledge_late_unless_told_otherwise() -> None:
    app = user_app()
    assert app.tasks["shop.o"].acks_late is True
    assert app.tasks["shop.o"].reject_on_worker_lost is True

    @app.task(base=RecordTask, name="shop.early", acks_late=False, shared=False)
    def early(record: Record) -> None: ...

    [problem] = worker.start_problems(app, ["shop.early", "shop.o"], [])
    assert problem.startswith("task shop.early: acks_late is off")


@pytest.mark.usefixtures("unconfigured")
def test_a_record_task_without_configuration_at_run_time_requeues_its_record() -> None:
    handler = user_app().tasks["shop.o"]
    with pytest.raises(Reject) as rejected:
        handler(to_task_arg(Envelope(RECORD, "g", "orders.g.dlt")))
    assert getattr(rejected.value, "requeue", None) is True  # Celery's stubs lack them
    assert isinstance(getattr(rejected.value, "reason", None), ConfigError)


def test_the_envelope_of_a_task_body_is_found_and_anything_else_is_not() -> None:
    arg = to_task_arg(ORDERED)
    assert envelope_in([[arg], {}, {}]) == ORDERED
    bodies: list[object] = [[[], {}, {}], [["text"], {}, {}], [[{"v": 1}], {}, {}], None, "x", [[]]]
    for body in bodies:
        assert envelope_in(body) is None, body


def test_an_unroutable_dead_letter_names_the_task_and_what_is_wrong() -> None:
    unknown = not_registered("shop.ordr", "w@h", NotRegistered("shop.ordr"))
    dl = dead_letter(ORDERED, "shop.ordr", "g:orders:2:7", unknown)
    assert (dl.reason, dl.attempts, dl.task, dl.ordered) == (
        Reason.UNROUTABLE,
        0,
        "shop.ordr",
        True,
    )
    assert dl.error.fqcn == "bridge.errors.UnroutableError"
    assert "celery.exceptions.NotRegistered" in dl.error.stacktrace  # its cause
    assert "task 'shop.ordr' is not registered in worker w@h" in dl.error.message
    assert dl.first_failure_at == dl.dead_lettered_at
    plain = not_a_record_task("shop.audit", "w@h")
    assert "is not a RecordTask" in str(plain)
    assert "base=RecordTask" in str(plain)


def test_coverage_tells_a_task_no_live_worker_of_the_queue_runs() -> None:
    workers = [
        Registration("a@h", ("q1",), ("t.ok",), ("t.plain",), 0),
        Registration("b@h", ("q1", "q2"), ("t.ok", "t.plain"), (), 0),
        Registration("c@h", ("q3",), ("t.typo",), (), 0),
    ]
    assert Registration.from_json(workers[1].to_json()) == workers[1]
    ok = coverage("t.ok", "q1", workers)
    assert (ok.consuming, ok.registered, ok.not_record_task) == (2, 2, ())
    assert task_problem("t.ok", "q1", ok) is None
    typo = coverage("t.typo", "q1", workers)  # c@h runs it, but not on q1
    assert "registered by none of the 2 live worker(s) of queue q1" in str(
        task_problem("t.typo", "q1", typo)
    )
    plain = coverage("t.plain", "q1", workers)
    assert "not a RecordTask in worker(s) a@h" in str(task_problem("t.plain", "q1", plain))
    assert task_problem("t.any", "q9", coverage("t.any", "q9", workers)) is None  # no one seen


def test_the_bridge_warns_once_per_route_problem_and_says_when_it_is_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = [Route("orders", "t.typo", "q1", False, "json", "orders.g.dlt"),
              Route("ok", "t.ok", "q1", False, "json", "ok.g.dlt")]  # fmt: skip
    workers = [Registration("a@h", ("q1",), ("t.ok",), (), 0)]
    problems = route_problems(routes, workers)
    assert list(problems) == ["orders"]
    watch = RouteWatch(None, routes)  # type: ignore[arg-type]  # not read: _report is pure
    with caplog.at_level(logging.INFO, logger="bridge.consumer.route_watch"):
        watch._report(problems)
        watch._report(problems)
        watch._report({})
    assert bridge_messages(caplog) == [
        f"route orders: {problems['orders']}",
        "route orders: its task is run by a live worker again",
    ]
