"""Batches on ordered routes, the pure parts: a FIFO element's batch part and body layout
(bridge.backends.redis.ordering), and where a batch's records part ways
(bridge.worker.ordered_batch)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.backends.redis.ordering import batch_piece, element, parse_element
from bridge.errors import UndecodableRecordError
from bridge.record import Envelope, Record
from bridge.worker.batch_outcomes import Replay
from bridge.worker.ordered_batch import decodable_prefix, first_failure

TAIL = '], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'


def test_an_element_carries_its_batch_part_after_the_message() -> None:
    data = element("g:t:0:5", 1000, "celery", b'{"body": "x"}', (10, 48))
    assert data.endswith(b"}\x0010:48")
    head = parse_element(data)
    assert (head.task_id, head.appended_ms, head.queue, head.message) == (
        "g:t:0:5", 1000, "celery", b'{"body": "x"}'
    )  # fmt: skip
    assert parse_element(element("g:t:0:5", 1, "q", b"{}")).message == b"{}"


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_pieces_join_in_base64_as_the_lua_script_joins_them(texts: list[str]) -> None:
    """What lua/fifo_publish.lua concatenates is the base64 of a batch's JSON body."""
    args = [f'{{"v": {s!r}}}'.replace("'", '"') for s in texts]
    laid = [batch_piece("[[", a) for a in args]
    for arg, (piece, cut) in zip(args, laid, strict=True):
        single = base64.b64encode(f"[[{piece}{TAIL}".encode()).decode()
        assert single.startswith(base64.b64encode(b"[[ ").decode())
        assert len(piece[1:].encode()) % 3 == 0
        assert cut == len(piece[1:].encode()) // 3 * 4
        assert piece.strip() == arg
    b64 = [base64.b64encode(f"[[{p}{TAIL}".encode()).decode() for p, _ in laid]
    parts = [b[4 : 4 + cut] for b, (_, cut) in zip(b64, laid, strict=True)]
    tail = b64[0][4 + laid[0][1] :]
    joined = "W1tb" + "LCAg".join(parts) + "XSAg" + tail
    body = base64.b64decode(joined).decode()
    assert body.replace(" ", "") == ("[[[" + ",".join(args) + "]" + TAIL).replace(" ", "")


def test_a_body_that_does_not_start_as_celerys_is_refused() -> None:
    with pytest.raises(ValueError, match="ordered batches need"):
        batch_piece("[[[", "{}")


def where(offset: int) -> tuple[str, int, int]:
    return ("t", 0, offset)


def test_the_first_failure_in_offset_order_splits_the_batch() -> None:
    boom, later = Replay.of(TimeoutError("boom")), Replay.of(ValueError("later"))
    coords = [where(o) for o in (3, 5, 8, 9)]
    assert first_failure(coords, {}) == (4, None)
    assert first_failure(coords, {where(9): later, where(5): boom}) == (1, boom)
    assert first_failure(coords, {where(3): boom}) == (0, boom)
    assert first_failure(coords, {where(4): boom}) == (4, None)  # not in the batch


def envelope(offset: int, raw: bytes) -> Envelope:
    return Envelope(
        Record("t", 0, offset, 0, b"k", raw, (), "json"), "g", "t.g.dlt", on_exhausted="park"
    )


def test_the_handler_runs_up_to_the_first_record_that_does_not_decode() -> None:
    records, failed = decodable_prefix([envelope(1, b"1"), envelope(2, b"{"), envelope(3, b"3")])
    assert [r.offset for r in records] == [1]
    assert list(failed) == [where(2)]
    assert isinstance(failed[where(2)].exc, UndecodableRecordError)
    records, failed = decodable_prefix([envelope(1, b"1"), envelope(2, b"2")])
    assert ([r.value for r in records], failed) == ([1, 2], {})
