"""The reliable fetch's commands and replies (bridge.backends.redis.fetch), without Redis."""

from __future__ import annotations

import pytest

from bridge.backends.redis.fetch import (
    MOVE_FIRST,
    PROCESSING_PREFIX,
    Fetcher,
    processing_key,
    source_of,
)

TOKEN = "0123456789abcdef0123456789abcdef"


def test_a_processing_list_names_its_channel_and_queue_key() -> None:
    for source in ("celery", "orders.high", "celery\x06\x163"):
        name = processing_key(TOKEN, source)
        assert name == f"{PROCESSING_PREFIX}{TOKEN}.{source}"
        assert source_of(name) == source


@pytest.mark.parametrize(
    "name", ["celery", f"{PROCESSING_PREFIX}short.celery", f"{PROCESSING_PREFIX}{TOKEN}celery"]
)
def test_a_name_that_is_not_a_processing_list_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a processing list"):
        source_of(name)


def test_one_queue_key_blocks_in_a_move_with_the_callers_timeout() -> None:
    fetcher = Fetcher(token=TOKEN, block_s=0.1)
    for _ in range(3):
        assert fetcher.command(["q"], 1) == [
            "BLMOVE", "q", processing_key(TOKEN, "q"), "RIGHT", "LEFT", 1,
        ]  # fmt: skip
        assert fetcher.command_name == "BLMOVE"
        assert fetcher.reply(None) is None
    fetcher.command(["q"], 1)
    assert fetcher.reply(b"element") == ("q", b"element")


def test_several_keys_scan_all_then_block_on_each_in_turn() -> None:
    fetcher = Fetcher(token=TOKEN, block_s=0.1)
    keys = ["a", "b", "c"]
    lists = [processing_key(TOKEN, key) for key in keys]
    assert fetcher.command(keys, 1) == ["EVAL", MOVE_FIRST, 6, *keys, *lists]
    assert fetcher.command_name == "EVAL"
    assert fetcher.reply([2, b"from c"]) == ("c", b"from c")  # found: scan again
    assert fetcher.command(keys, 1)[0] == "EVAL"
    assert fetcher.reply(None) is None  # nothing anywhere: block, on one key at a time
    blocked = []
    for _ in range(4):
        command = fetcher.command(keys, 1)
        assert command[0] == "BLMOVE"
        assert command[-1] == 0.1  # not the caller's timeout
        blocked.append(command[1])
        assert fetcher.reply(None) is None  # a block that times out goes back to scanning
        assert fetcher.command(keys, 1)[0] == "EVAL"
        fetcher.reply(None)
    assert blocked == ["a", "b", "c", "a"]  # each key in turn, none left out
    fetcher.command(keys, 1)
    assert fetcher.reply(b"x") == ("b", b"x")
    assert fetcher.command(keys, 1)[0] == "EVAL"


def test_a_fetch_without_processing_lists_is_kombus_brpop() -> None:
    fetcher = Fetcher(token=TOKEN, block_s=0.1)
    keys = ["a", "b"]
    assert fetcher.command(keys, 1, keep=False) == ["BRPOP", "a", "b", 1]
    assert fetcher.command_name == "BRPOP"
    assert fetcher.reply(None) is None
    fetcher.command(keys, 1, keep=False)
    assert fetcher.reply([b"b", b"x"]) == ("b", b"x")
    fetcher.command(keys, 1, keep=False)
    assert fetcher.reply(["a", b"y"]) == ("a", b"y")  # a client that decodes replies
    assert (fetcher.kept, fetcher.named()) == (False, [])  # no processing list named
    fetcher.command(keys, 1)
    lists = sorted(processing_key(TOKEN, key) for key in keys)
    assert (fetcher.kept, fetcher.named()) == (True, lists)
