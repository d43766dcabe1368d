"""RecordBatchTask without a worker: how a handler of batches is called, one record's failure
raised as a single handler's, and the start-up checks of batched routes (issue 20)."""

from __future__ import annotations

import pytest
from celery import Celery

from bridge import BatchFailed, PermanentError, Record, RecordBatchTask, RecordTask
from bridge.record import Envelope, to_task_arg
from bridge.settings import BridgeSettings
from bridge.worker import state as worker
from bridge.worker import transport as worker_transport
from bridge.worker.batch_outcomes import Replay
from bridge.worker.unroutable import envelopes_in

SETTINGS = BridgeSettings.model_validate(
    {
        "kafka": {"bootstrap_servers": "k:9092", "group_id": "g"},
        "celery": {"broker_url": "redis://r/0"},
        "routes": [
            {"topic": "one", "task": "shop.one", "batch_size": 50},
            {"topic": "many", "task": "shop.many", "batch_size": 50},
            {"topic": "single", "task": "shop.many_too"},
        ],
    }
)
ONE, TWO = (Record("t", 0, o, 1000, b"k", b"{}", (), "json") for o in (1, 2))


def user_app() -> Celery:
    app = Celery("shop", broker="redis://r/0", set_as_current=False)
    app.conf.update(accept_content=["json"])

    @app.task(base=RecordTask, name="shop.one", shared=False)
    def one(record: Record) -> None: ...

    @app.task(base=RecordBatchTask, name="shop.many", shared=False, autoretry_for=(TimeoutError,))
    def many(records: list[Record]) -> int:
        failed = {r: PermanentError(f"bad {r.offset}") for r in records if r.offset == 2}
        if failed:
            raise BatchFailed(failed)
        return len(records)

    @app.task(base=RecordBatchTask, name="shop.many_too", bind=True, shared=False)
    def many_too(self: RecordBatchTask, records: list[Record]) -> str:
        return f"{self.name}: {[r.offset for r in records]}"

    return app


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_transport.install()
    monkeypatch.setattr(worker, "_settings", SETTINGS)


@pytest.mark.usefixtures("configured")
def test_a_batched_route_needs_a_record_batch_task() -> None:
    app = user_app()
    problems = worker.start_problems(app, ["shop.many", "shop.many_too", "shop.one"], [])
    assert problems == [
        "route one: batch_size = 50, but task shop.one is a RecordTask of one record; declare "
        "it with @app.task(base=RecordBatchTask, ...) and let it take a list of records"
    ]
    assert app.tasks["shop.many"].acks_late is True  # a RecordTask, with its guarantees


def test_called_directly_a_batch_handler_is_the_function() -> None:
    app = user_app()
    assert app.tasks["shop.many"]([ONE]) == 1
    assert app.tasks["shop.many_too"]([ONE, TWO]) == "shop.many_too: [1, 2]"
    with pytest.raises(BatchFailed):
        app.tasks["shop.many"]([ONE, TWO])


def test_one_record_runs_the_handler_on_a_list_of_one_and_raises_its_own_failure() -> None:
    app = user_app()
    run = app.tasks["shop.many"]._orig_run  # type: ignore[attr-defined]  # under autoretry
    assert run(ONE) == 1
    with pytest.raises(PermanentError, match="bad 2"):
        run(TWO)
    assert app.tasks["shop.many_too"].run(TWO) == "shop.many_too: [2]"


def test_a_replay_raises_the_failure_it_carries() -> None:
    app = user_app()
    with pytest.raises(TimeoutError, match="slow"):
        app.tasks["shop.many_too"].run(Replay.of(TimeoutError("slow")))


def test_the_envelopes_of_a_batch_message_are_found_for_unroutable_dead_letters() -> None:
    args = [to_task_arg(Envelope(r, "g", "t.g.dlt")) for r in (ONE, TWO)]
    assert [e.record.offset for e in envelopes_in([[args], {}, {}])] == [1, 2]
    assert [e.record.offset for e in envelopes_in([[args[0]], {}, {}])] == [1]
    bodies: list[object] = [[[[]], {}, {}], [[["x"]], {}, {}], [[], {}, {}], "x"]
    for body in bodies:
        assert envelopes_in(body) == [], body
