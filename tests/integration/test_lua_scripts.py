"""Every Lua script of bridge/backends/redis/lua, each transition, run directly in real Redis.

Table-driven: a case gives the Redis state before (keys named by what they are: ``fifo``,
``heads``, ``q1``...), the call, what it returns, and what changed; every other key of the
test must be left as it was. Calls go through the objects the product uses (the dispatcher,
the key queues, the scheduler, the dead-letter store, the fetcher), so the argument building is
tested too. Each test has its own key prefix (a fresh group id) in a Redis db of its own (3:
the workers of the other integration tests tend the processing index of db 1).

Keys: ``fifo`` and ``fifo2`` are two keys of partition 0, ``fifo3`` a key of partition 1 (their
records' messages go to ``q1``); ``mark0`` is partition 0's watermark (``mark0@id``: of a topic
whose id is known), ``waiting0`` its counter. Values in a state: a FIFO lists its records'
offsets, head first; a queue lists its messages
(``msg-N`` as N) in ``LRANGE`` order, newest first (``LPUSH``); sorted sets map members to
scores; ``None`` in a case's ``then``: the key is gone.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast

import pytest
import redis

from bridge import keys
from bridge.backends.redis import scripts
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.dispatch import Dispatcher
from bridge.backends.redis.enqueue import Message, Ordered
from bridge.backends.redis.fetch import PROCESSING_INDEX, RESTORE, Fetcher, processing_key
from bridge.backends.redis.ordering import KeyQueues, element, parse_element
from bridge.backends.redis.retries import Scheduler, schedule_retry
from bridge.errors import NotParkedError
from bridge.record import task_id
from bridge.settings import CelerySettings
from tests.conftest import REDIS_PORT
from tests.integration.conftest import reachable_redis

URL = f"redis://127.0.0.1:{REDIS_PORT}/3"
TOPIC = "t"
DEADLINE = 50  # the stall deadline (ms) the cases hand to the scripts
TTL_S = 600
WHY = {"task_id": "x", "reason": "exhausted", "attempts": 3}
_MSG = re.compile(rb"msg-(\d+)")


class World:
    """One test's Redis keys by name, and the product's objects over them."""

    def __init__(self, client: redis.Redis, group: str) -> None:
        self.client, self.group, self.token = client, group, uuid.uuid4().hex
        self.queues = KeyQueues(client, group)
        q = {name: f"{group}.{name}" for name in ("q1", "q2", "qa", "qb")}
        self.keys = {
            **q,
            **{f"mark{p}": keys.published_watermark(group, TOPIC, p) for p in (0, 1)},
            "mark0@id": keys.published_watermark(group, TOPIC, 0, "id"),
            **{f"waiting{p}": keys.ordered_waiting(group, TOPIC, p) for p in (0, 1)},
            "heads": keys.ordered_heads(group),
            "failing": keys.ordered_failing(group),
            "parked": keys.ordered_parked(group),
            "fifo": self.queues.fifo(TOPIC, b"a", 0),
            "fifo2": self.queues.fifo(TOPIC, b"b", 0),
            "fifo3": self.queues.fifo(TOPIC, b"c", 1),
            "delayed": keys.delayed_retries(group),
            "gathered": keys.gathered_retries(group),
            "gathered_env": keys.gathered_retry_envelopes(group),
            "dl_parked": keys.parked_dead_letters(group),
            "pa": processing_key(self.token, q["qa"]),
            "pb": processing_key(self.token, q["qb"]),
            "index": PROCESSING_INDEX,
            "no queue": "",  # what DeadLetterStore.unpark passes when it pushes nothing
        }
        self.names = {real: name for name, real in self.keys.items()}
        self._dispatcher: Dispatcher | None = None

    # -- what the cases write and call -------------------------------------------------------

    def tid(self, offset: int, partition: int = 0) -> str:
        return task_id(self.group, TOPIC, partition, offset)

    def element(self, offset: int, partition: int = 0) -> bytes:
        """The FIFO element of record ``offset``: its message goes to ``q1``."""
        return element(self.tid(offset, partition), 1000, self.keys["q1"], message(offset))

    def push(self, offset: int, partition: int = 0, queue: str = "q1") -> Message:
        return Message(TOPIC, partition, offset, self.keys[queue], message(offset))

    def advance(self, offset: int, partition: int = 0) -> Message:
        return Message(TOPIC, partition, offset, None, None)

    def append(
        self, offset: int, fifo: str = "fifo", max_key: int = 10, max_part: int = 10
    ) -> Message:
        partition = 1 if fifo == "fifo3" else 0
        ordered = Ordered(self.keys[fifo], max_key, max_part)
        payload = self.element(offset, partition)
        return Message(TOPIC, partition, offset, self.keys["q1"], payload, ordered)

    def publish(
        self, messages: list[Message], topic_ids: dict[str, str | None] | None = None
    ) -> Any:
        """Run the enqueue script; the outcome with each refusal as (partition, offset, full,
        the name of the key it watches, limit)."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(
                CelerySettings(broker_url=URL, enqueue_dedup_ttl_s=TTL_S), self.group
            )
        out = self._dispatcher.publish(messages, DEADLINE, topic_ids)
        refused = [
            (r.partition, r.offset, r.full, self.names[r.watch], r.limit) for r in out.refused
        ]
        return (out.enqueued, out.skipped, out.appended, refused)

    def head(self, offset: int) -> Any:
        return parse_element(self.element(offset))

    def fetch(self, queues: list[str]) -> tuple[str, Any] | None:
        """One non-blocking fetch over several queues, as a worker's channel sends it."""
        fetcher = Fetcher(self.token, block_s=0.01)
        command = fetcher.command([self.keys[q] for q in queues], 1)
        assert command[0] == "EVAL"
        got = fetcher.reply(cast(Any, self.client).execute_command(*command))
        return None if got is None else (self.names[got[0]], decoded(got[1]))

    def restore(self, forget: bool) -> Any:
        """Put ``pa`` back in ``qa``, as the workers' transport does (``_restore_list``)."""
        return self.client.eval(
            RESTORE, 3, self.keys["pa"], self.keys["qa"], PROCESSING_INDEX, int(forget)
        )

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.close()
        self.client.zrem(PROCESSING_INDEX, self.keys["pa"], self.keys["pb"])
        self.client.delete("")
        for key in self.client.scan_iter(match=f"*{self.group}*", count=1000):
            self.client.delete(key)

    # -- states --------------------------------------------------------------------------------

    def load(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            key = self.keys[name]
            if isinstance(value, int):
                self.client.set(key, value)
            elif isinstance(value, list):
                self.client.rpush(key, *(self._item(name, v) for v in value))
            elif name in ("heads", "index", "delayed", "gathered"):
                scores: dict[Any, float] = {self._member(name, m): s for m, s in value.items()}
                self.client.zadd(key, scores)
            else:
                self.client.hset(
                    key,
                    mapping={self._field(name, f): self._value(name, v) for f, v in value.items()},
                )

    def state(self) -> dict[str, Any]:
        """Every key of this test that exists, by name, in the notation of the cases."""
        found = {name: self._read(name, self.keys[name]) for name in self.keys}
        return {name: value for name, value in found.items() if value not in (None, {})}

    def _read(self, name: str, key: str) -> Any:
        kind = self.client.type(key)
        readers = {b"string": self._string, b"list": self._list, b"zset": self._zset,
                   b"hash": self._hash}  # fmt: skip
        assert kind in readers or kind == b"none", (name, kind)
        return readers[kind](name, key) if kind in readers else None

    def _string(self, name: str, key: str) -> int:
        return int(cast(bytes, self.client.get(key)))

    def _list(self, name: str, key: str) -> list[Any]:
        return [self._unitem(name, v) for v in cast(list[bytes], self.client.lrange(key, 0, -1))]

    def _zset(self, name: str, key: str) -> dict[Any, int]:
        pairs = cast(list[tuple[bytes, float]], self.client.zrange(key, 0, -1, withscores=True))
        members = {self._unmember(name, m): int(s) for m, s in pairs}
        return {m: s for m, s in members.items() if m is not None}

    def _hash(self, name: str, key: str) -> dict[Any, Any]:
        pairs = cast(dict[bytes, bytes], self.client.hgetall(key)).items()
        return {self._unfield(name, f): self._unvalue(name, v) for f, v in pairs}

    def _item(self, name: str, value: Any) -> bytes:
        if name.startswith("fifo"):
            return self.element(value, 1 if name == "fifo3" else 0)
        return message(value)

    def _unitem(self, name: str, data: bytes) -> Any:
        if not name.startswith("fifo"):
            return decoded(data)
        head = parse_element(data)
        assert head.queue == self.keys["q1"]
        assert head.message == message(int(head.task_id.rsplit(":", 1)[1]))
        return int(head.task_id.rsplit(":", 1)[1])

    def _member(self, name: str, member: Any) -> bytes | str:
        if name == "gathered":
            return str(member)
        if name == "delayed":
            queue, msg = member
            return self.keys[queue].encode() + b"\0" + message(msg)
        return self.keys[member]

    def _unmember(self, name: str, data: bytes) -> Any:
        if name == "gathered":
            return data.decode()
        if name == "delayed":
            queue, msg = data.split(b"\0", 1)
            return (self.names[queue.decode()], decoded(msg))
        return self.names.get(data.decode())  # the index: other tests' entries are not ours

    def _field(self, name: str, field_: Any) -> str:
        if name == "gathered_env":
            return str(field_)
        return self.tid(field_) if name == "dl_parked" else self.keys[field_]

    def _unfield(self, name: str, data: bytes) -> Any:
        if name == "gathered_env":
            return data.decode()
        if name == "dl_parked":
            return int(data.decode().rsplit(":", 1)[1])
        return self.names[data.decode()]

    def _value(self, name: str, value: Any) -> str:
        return str(value) if name == "failing" else json.dumps(value, sort_keys=True)

    def _unvalue(self, name: str, data: bytes) -> Any:
        return int(data) if name == "failing" else json.loads(data)


def message(value: int | bytes) -> bytes:
    """A task message: ``msg-N`` for a number, else the bytes themselves."""
    return value if isinstance(value, bytes) else b"msg-%d" % value


def decoded(data: bytes) -> int | bytes:
    found = _MSG.fullmatch(data)
    return int(found.group(1)) if found else data


@dataclass(frozen=True)
class Case:
    """Given ``given`` in Redis, ``call`` returns ``returns`` (or raises it) and the state
    becomes ``given`` updated by ``then``."""

    id: str
    call: Callable[[World], Any]
    returns: Any
    given: dict[str, Any] = field(default_factory=dict)
    then: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    connection = reachable_redis(URL)
    yield connection
    connection.close()


@pytest.fixture
def world(client: redis.Redis) -> Iterator[World]:
    made = World(client, f"lua-{uuid.uuid4().hex}")
    yield made
    made.close()


# -- enqueue.lua: one poll batch (Dispatcher.publish) ------------------------------------------

ENQUEUE = (
    Case("push: records to their queue, the watermark past the last",
         lambda w: w.publish([w.push(0), w.push(1)]), (2, 0, 0, []),
         then={"q1": [1, 0], "mark0": 2}),
    Case("push: two partitions and two queues (KEYS[2n+1+q])",
         lambda w: w.publish([w.push(5), w.push(7, partition=1, queue="q2"), w.push(6)]),
         (3, 0, 0, []), then={"q1": [6, 5], "q2": [7], "mark0": 7, "mark1": 8}),
    Case("skip: a record below its partition's watermark was enqueued before",
         lambda w: w.publish([w.push(3), w.push(4), w.push(5)]), (1, 2, 0, []),
         given={"mark0": 5}, then={"q1": [5], "mark0": 6}),
    Case("advance: a record the bridge dead-lettered moves the watermark only",
         lambda w: w.publish([w.advance(3)]), (0, 0, 0, []), then={"mark0": 4}),
    Case("advance: below the watermark, skipped",
         lambda w: w.publish([w.advance(3)]), (0, 1, 0, []), given={"mark0": 5}),
    Case("refused (3): below a watermark it cannot verify; its partition stops, others go on",
         lambda w: w.publish([w.push(8), w.push(10), w.push(0, partition=1)], {TOPIC: None}),
         (1, 0, 0, [(0, 8, "watermark", "mark0", 1)]),
         given={"mark0": 10}, then={"q1": [0], "mark1": 1}),
    Case("unverifiable watermark: a record at it is enqueued",
         lambda w: w.publish([w.push(10)], {TOPIC: None}), (1, 0, 0, []),
         given={"mark0": 10}, then={"q1": [10], "mark0": 11}),
    Case("known topic id: its own watermark, and below it skipped",
         lambda w: w.publish([w.push(2), w.push(3)], {TOPIC: "id"}), (1, 1, 0, []),
         given={"mark0": 10, "mark0@id": 3}, then={"q1": [3], "mark0@id": 4}),
    Case("append: an idle key's record is its head, published and watched",
         lambda w: w.publish([w.append(0)]), (0, 0, 1, []),
         then={"fifo": [0], "q1": [0], "heads": {"fifo": DEADLINE}, "waiting0": 1, "mark0": 1}),
    Case("append: behind a head, the record waits",
         lambda w: w.publish([w.append(1)]), (0, 0, 1, []),
         given={"fifo": [0], "waiting0": 1, "heads": {"fifo": 5}, "mark0": 1},
         then={"fifo": [0, 1], "waiting0": 2, "mark0": 2}),
    Case("append: FIFOs after the queues (KEYS[2n+1+nq+f]), two partitions",
         lambda w: w.publish([w.push(0, queue="q2"), w.append(1, "fifo2"), w.append(2),
                              w.append(3, "fifo2"), w.append(0, "fifo3")]),
         (1, 0, 4, []),
         then={"q2": [0], "fifo": [2], "fifo2": [1, 3], "fifo3": [0], "q1": [0, 2, 1],
               "heads": {"fifo": DEADLINE, "fifo2": DEADLINE, "fifo3": DEADLINE},
               "waiting0": 3, "waiting1": 1, "mark0": 4, "mark1": 1}),
    Case("refused (1): the key is full; its partition stops, others go on",
         lambda w: w.publish([w.append(2, max_key=2), w.append(3, "fifo2", max_key=2),
                              w.append(0, "fifo3", max_key=2)]),
         (0, 0, 1, [(0, 2, "key", "fifo", 2)]),
         given={"fifo": [0, 1], "waiting0": 2, "heads": {"fifo": 5}, "mark0": 2},
         then={"fifo3": [0], "q1": [0], "heads": {"fifo": 5, "fifo3": DEADLINE},
               "waiting1": 1, "mark1": 1}),
    Case("refused (2): the partition is full",
         lambda w: w.publish([w.append(2, max_part=2)]),
         (0, 0, 0, [(0, 2, "partition", "waiting0", 2)]),
         given={"fifo2": [0, 1], "waiting0": 2, "heads": {"fifo2": 5}, "mark0": 2}),
    Case("refused after accepted records: they stay, the watermark stops at the refused one",
         lambda w: w.publish([w.push(1), w.append(2, max_key=1), w.push(3)]),
         (1, 0, 0, [(0, 2, "key", "fifo", 1)]),
         given={"fifo": [0], "waiting0": 1, "heads": {"fifo": 5}, "mark0": 1},
         then={"q1": [1], "mark0": 2}),
    Case("refused with no watermark yet: none is written",
         lambda w: w.publish([w.append(1, max_part=1)]),
         (0, 0, 0, [(0, 1, "partition", "waiting0", 1)]),
         given={"fifo2": [0], "waiting0": 1}),
)  # fmt: skip


def test_enqueue_sets_every_watermark_again_with_its_ttl(world: World) -> None:
    world.load({"mark0": 5})  # no TTL yet
    assert world.publish([world.push(3), world.push(0, partition=1)]) == (1, 1, 0, [])
    for name in ("mark0", "mark1"):
        assert 0 < world.client.ttl(world.keys[name]) <= TTL_S, name


# -- ordered_*.lua: the key FIFOs' transitions (KeyQueues) -------------------------------------

START = (
    Case("the head runs: its stall deadline is set",
         lambda w: w.queues.start(w.keys["fifo"], w.tid(0), DEADLINE), True,
         given={"fifo": [0, 1], "heads": {"fifo": 5}}, then={"heads": {"fifo": DEADLINE}}),
    Case("a stale copy of an earlier head is dropped",
         lambda w: w.queues.start(w.keys["fifo"], w.tid(0), DEADLINE), False,
         given={"fifo": [1, 2], "heads": {"fifo": 5}}),
    Case("a later record waits for its turn",
         lambda w: w.queues.start(w.keys["fifo"], w.tid(2), DEADLINE), False,
         given={"fifo": [1, 2], "heads": {"fifo": 5}}),
    Case("a parked key's head is dropped",
         lambda w: w.queues.start(w.keys["fifo"], w.tid(0), DEADLINE), False,
         given={"fifo": [0], "parked": {"fifo": WHY}}),
    Case("an idle key runs nothing",
         lambda w: w.queues.start(w.keys["fifo"], w.tid(0), DEADLINE), False),
    Case("another key parked does not matter",
         lambda w: w.queues.start(w.keys["fifo"], w.tid(0), DEADLINE), True,
         given={"fifo": [0], "fifo2": [3], "parked": {"fifo2": WHY}},
         then={"heads": {"fifo": DEADLINE}}),
)  # fmt: skip


def batch_done(w: World, offsets: list[int], hold: bool) -> int:
    return w.queues.batch_done(w.keys["fifo"], 0, [w.tid(o) for o in offsets], DEADLINE, hold=hold)


BATCH_DONE = (
    Case("the batch succeeded: its records leave, the next head is published",
         lambda w: batch_done(w, [0, 1], hold=False), 2,
         given={"fifo": [0, 1, 2], "waiting0": 3, "heads": {"fifo": 5, "fifo2": 7},
                "failing": {"fifo": 100, "fifo2": 200}},
         then={"fifo": [2], "waiting0": 1, "q1": [2], "heads": {"fifo": DEADLINE, "fifo2": 7},
               "failing": {"fifo2": 200}}),
    Case("the record after them failed: it is the head, watched, nothing published",
         lambda w: batch_done(w, [0], hold=True), 1,
         given={"fifo": [0, 1, 2], "waiting0": 3, "heads": {"fifo": 5}},
         then={"fifo": [1, 2], "waiting0": 2, "heads": {"fifo": DEADLINE}}),
    Case("the last records leave the key idle",
         lambda w: batch_done(w, [0, 1], hold=False), 2,
         given={"fifo": [0, 1], "waiting0": 2, "heads": {"fifo": 5}},
         then={"fifo": None, "waiting0": 0, "heads": None}),
    Case("a stale copy (not the first records, in order) changes nothing",
         lambda w: batch_done(w, [0, 2], hold=False), 0,
         given={"fifo": [0, 1, 2], "waiting0": 3, "heads": {"fifo": 5}}),
    Case("more records than the FIFO holds: a stale copy",
         lambda w: batch_done(w, [1, 2, 3], hold=False), 0,
         given={"fifo": [1, 2], "waiting0": 2, "heads": {"fifo": 5}}),
)  # fmt: skip

DONE = (
    Case("the next record becomes the head and is published",
         lambda w: w.queues.done(w.keys["fifo"], 0, w.tid(0), DEADLINE), True,
         given={"fifo": [0, 1, 2], "waiting0": 3, "heads": {"fifo": 5, "fifo2": 7},
                "failing": {"fifo": 100, "fifo2": 200}},
         then={"fifo": [1, 2], "waiting0": 2, "q1": [1], "heads": {"fifo": DEADLINE, "fifo2": 7},
               "failing": {"fifo2": 200}}),
    Case("the last record leaves the key idle",
         lambda w: w.queues.done(w.keys["fifo"], 0, w.tid(0), DEADLINE), True,
         given={"fifo": [0], "waiting0": 1, "heads": {"fifo": 5}},
         then={"fifo": None, "waiting0": 0, "heads": None}),
    Case("a stale copy changes nothing",
         lambda w: w.queues.done(w.keys["fifo"], 0, w.tid(0), DEADLINE), False,
         given={"fifo": [1, 2], "waiting0": 2, "heads": {"fifo": 5}}),
    Case("the head's own partition counts one less",
         lambda w: w.queues.done(w.keys["fifo3"], 1, w.tid(0, 1), DEADLINE), True,
         given={"fifo3": [0], "waiting0": 4, "waiting1": 1, "heads": {"fifo3": 5}},
         then={"fifo3": None, "waiting1": 0, "heads": None}),
)  # fmt: skip

RETRYING = (
    Case("the head stays, its deadline moves past the retry, the key is failing since now",
         lambda w: w.queues.retrying(w.keys["fifo"], w.tid(0), 800, 1000), None,
         given={"fifo": [0, 1], "heads": {"fifo": 5}},
         then={"heads": {"fifo": 800}, "failing": {"fifo": 1000}}),
    Case("a key failing again keeps when it started failing",
         lambda w: w.queues.retrying(w.keys["fifo"], w.tid(0), 800, 1000), None,
         given={"fifo": [0], "heads": {"fifo": 5}, "failing": {"fifo": 700}},
         then={"heads": {"fifo": 800}}),
    Case("a stale copy changes nothing",
         lambda w: w.queues.retrying(w.keys["fifo"], w.tid(0), 800, 1000), None,
         given={"fifo": [1], "heads": {"fifo": 5}}),
)  # fmt: skip

PARK = (
    Case("an exhausted head parks its key: out of the stall watch, why kept",
         lambda w: w.queues.park(w.keys["fifo"], w.tid(0), WHY), True,
         given={"fifo": [0, 1], "heads": {"fifo": 5, "fifo2": 6}, "failing": {"fifo": 100}},
         then={"heads": {"fifo2": 6}, "failing": None, "parked": {"fifo": WHY}}),
    Case("a pending dead letter: out of the stall watch, not parked",
         lambda w: w.queues.park(w.keys["fifo"], w.tid(0), None), True,
         given={"fifo": [0, 1], "heads": {"fifo": 5, "fifo2": 6}, "failing": {"fifo": 100}},
         then={"heads": {"fifo2": 6}, "failing": None}),
    Case("a stale copy changes nothing",
         lambda w: w.queues.park(w.keys["fifo"], w.tid(0), WHY), False,
         given={"fifo": [1], "heads": {"fifo": 5}, "failing": {"fifo": 100}}),
)  # fmt: skip

RELEASE = (
    Case("resume: the same head is published again",
         lambda w: w.queues.release(w.keys["fifo"], w.head(0), skip=False, deadline_ms=DEADLINE),
         None, given={"fifo": [0, 1], "waiting0": 2, "parked": {"fifo": WHY}},
         then={"parked": None, "q1": [0], "heads": {"fifo": DEADLINE}}),
    Case("skip: the head is dropped, the next record published",
         lambda w: w.queues.release(w.keys["fifo"], w.head(0), skip=True, deadline_ms=DEADLINE),
         None, given={"fifo": [0, 1], "waiting0": 2, "parked": {"fifo": WHY}},
         then={"fifo": [1], "waiting0": 1, "parked": None, "q1": [1],
               "heads": {"fifo": DEADLINE}}),
    Case("skip the last record: the key is idle",
         lambda w: w.queues.release(w.keys["fifo"], w.head(0), skip=True, deadline_ms=DEADLINE),
         None, given={"fifo": [0], "waiting0": 1, "parked": {"fifo": WHY}},
         then={"fifo": None, "waiting0": 0, "parked": None}),
    Case("a key that is not parked: refused",
         lambda w: w.queues.release(w.keys["fifo"], w.head(0), skip=True, deadline_ms=DEADLINE),
         NotParkedError, given={"fifo": [0], "waiting0": 1, "heads": {"fifo": 5}}),
    Case("parked at another head than the operator saw: refused",
         lambda w: w.queues.release(w.keys["fifo"], w.head(0), skip=True, deadline_ms=DEADLINE),
         NotParkedError, given={"fifo": [1], "waiting0": 1, "parked": {"fifo": WHY}}),
)  # fmt: skip

REPUBLISH = (
    Case("a head at its deadline is published again, with a new one",
         lambda w: [w.names[f] for f in w.queues.republish_stalled(100, 900)], ["fifo"],
         given={"fifo": [0, 1], "fifo2": [3], "heads": {"fifo": 100, "fifo2": 101}},
         then={"q1": [0], "heads": {"fifo": 900, "fifo2": 101}}),
    Case("a FIFO that emptied leaves the watch",
         lambda w: [w.names[f] for f in w.queues.republish_stalled(100, 900)], ["fifo"],
         given={"heads": {"fifo": 5}}, then={"heads": None}),
    Case("at most limit keys, the most overdue first",
         lambda w: [w.names[f] for f in w.queues.republish_stalled(100, 900, limit=1)],
         ["fifo2"], given={"fifo": [0], "fifo2": [3], "heads": {"fifo": 6, "fifo2": 5}},
         then={"q1": [3], "heads": {"fifo": 6, "fifo2": 900}}),
    Case("nothing due: nothing published",
         lambda w: w.queues.republish_stalled(100, 900), [],
         given={"fifo": [0], "heads": {"fifo": 101}}),
)  # fmt: skip


# -- retries_move_due.lua (bridge.backends.redis.retries) and dead_letter_unpark.lua
# (bridge.backends.redis.dead_letter_store)
# -------------------------

MOVE_DUE = (
    Case("due retries go to their queues, the later ones wait",
         lambda w: Scheduler(w.client, w.group).move_due(100), 2,
         given={"delayed": {("q1", 1): 5, ("q2", 2): 100, ("q1", 3): 101}},
         then={"q1": [1], "q2": [2], "delayed": {("q1", 3): 101}}),
    Case("at most limit, the earliest first",
         lambda w: Scheduler(w.client, w.group).move_due(100, limit=1), 1,
         given={"delayed": {("q1", 1): 7, ("q1", 2): 5}},
         then={"q1": [2], "delayed": {("q1", 1): 7}}),
    Case("a message arrives byte-exact (NUL and bytes that are not UTF-8)",
         lambda w: Scheduler(w.client, w.group).move_due(100), 1,
         given={"delayed": {("q1", b"a\0b\xff"): 5}},
         then={"q1": [b"a\0b\xff"], "delayed": None}),
    Case("nothing due: nothing moved",
         lambda w: Scheduler(w.client, w.group).move_due(100), 0,
         given={"delayed": {("q1", 1): 101}}),
)  # fmt: skip


def gather(w: World, *members: str) -> Any:
    """retries_gather.lua: ``members`` leave in one message (``msg-9``) to ``q1``."""
    script = w.client.register_script(scripts.script("retries_gather"))
    gathered = [w.keys["gathered"], w.keys["gathered_env"], w.keys["q1"]]
    return script(keys=gathered, args=[message(9), *members])


GATHERED = {"gathered": {"m1": 5, "m2": 6, "m3": 7},
            "gathered_env": {"m1": {"n": 1}, "m2": {"n": 2}, "m3": {"n": 3}}}  # fmt: skip

GATHER = (
    Case("every member there: they leave with their envelopes, one message is pushed",
         lambda w: gather(w, "m1", "m2"), 2, given=GATHERED,
         then={"gathered": {"m3": 7}, "gathered_env": {"m3": {"n": 3}}, "q1": [9]}),
    Case("a member gone (another bridge moved it): nothing leaves, nothing is pushed",
         lambda w: gather(w, "m1", "m4"), 0, given=GATHERED),
)  # fmt: skip

UNPARK = (
    Case("redriven with its message: forgotten and enqueued in one step",
         lambda w: DeadLetterStore(w.client, w.group).unpark(w.tid(0), (w.keys["q1"], b"msg-9")),
         True, given={"dl_parked": {0: {"n": 0}, 1: {"n": 1}}},
         then={"dl_parked": {1: {"n": 1}}, "q1": [9]}),
    Case("redriven without a message: only forgotten",
         lambda w: DeadLetterStore(w.client, w.group).unpark(w.tid(0)), True,
         given={"dl_parked": {0: {"n": 0}, 1: {"n": 1}}}, then={"dl_parked": {1: {"n": 1}}}),
    Case("not parked (any more): nothing is pushed",
         lambda w: DeadLetterStore(w.client, w.group).unpark(w.tid(0), (w.keys["q1"], b"msg-9")),
         False, given={"dl_parked": {1: {"n": 1}}}),
)  # fmt: skip


def test_a_scheduled_retry_is_what_move_due_moves(world: World) -> None:
    schedule_retry(world.client, world.group, world.keys["q2"], b"msg-4", 5)
    assert world.state() == {"delayed": {("q2", 4): 5}}
    assert Scheduler(world.client, world.group).move_due(5) == 1
    assert world.state() == {"q2": [4]}


# -- fetch_move_first.lua and fetch_restore.lua (the workers' transport) ------------------------

MOVE_FIRST = (
    Case("the front element of the first non-empty queue, into its processing list",
         lambda w: w.fetch(["qa", "qb"]), ("qb", 1), given={"qb": [2, 1]},
         then={"qb": [2], "pb": [1]}),
    Case("the first queue first",
         lambda w: w.fetch(["qa", "qb"]), ("qa", 5), given={"qa": [5], "qb": [1]},
         then={"qa": None, "pa": [5]}),
    Case("the newest fetched at the left of the processing list",
         lambda w: w.fetch(["qa", "qb"]), ("qa", 3), given={"qa": [3], "pa": [1]},
         then={"qa": None, "pa": [3, 1]}),
    Case("all empty: nothing", lambda w: w.fetch(["qa", "qb"]), None),
)  # fmt: skip

RESTORE_CASES = (
    Case("every element back to the front of its queue, the oldest first in line; forgotten",
         lambda w: w.restore(forget=True), 3,
         given={"pa": [3, 2, 1], "qa": [4], "index": {"pa": 1000, "pb": 1001}},
         then={"pa": None, "qa": [4, 3, 2, 1], "index": {"pb": 1001}}),
    Case("not forgotten: the list stays in the index",
         lambda w: w.restore(forget=False), 3,
         given={"pa": [3, 2, 1], "qa": [4], "index": {"pa": 1000}},
         then={"pa": None, "qa": [4, 3, 2, 1]}),
    Case("an empty list: nothing moved, still forgotten",
         lambda w: w.restore(forget=True), 0, given={"index": {"pa": 1000}},
         then={"index": None}),
)  # fmt: skip


def test_fetched_then_restored_the_queue_is_as_it_was(world: World) -> None:
    world.load({"qa": [3, 2, 1]})
    assert [world.fetch(["qa", "qb"]) for _ in range(4)] == [("qa", 1), ("qa", 2), ("qa", 3), None]
    assert world.state() == {"pa": [3, 2, 1]}
    assert world.restore(forget=True) == 3
    assert world.state() == {"qa": [3, 2, 1]}


# -- every script's table ------------------------------------------------------------------------

SCRIPTS = {
    "enqueue": ENQUEUE,
    "ordered_start": START,
    "ordered_done": DONE,
    "ordered_batch_done": BATCH_DONE,
    "ordered_retrying": RETRYING,
    "ordered_park": PARK,
    "ordered_release": RELEASE,
    "ordered_republish": REPUBLISH,
    "retries_move_due": MOVE_DUE,
    "retries_gather": GATHER,
    "dead_letter_unpark": UNPARK,
    "fetch_move_first": MOVE_FIRST,
    "fetch_restore": RESTORE_CASES,
}


def test_every_script_has_its_table() -> None:
    lua = resources.files("bridge.backends.redis").joinpath("lua")
    names = {entry.name.removesuffix(".lua") for entry in lua.iterdir()}
    shared = {part for uses in scripts.USES.values() for part in uses}
    assert set(SCRIPTS) == names - shared


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=f"{name}: {case.id}")
        for name, cases in SCRIPTS.items()
        for case in cases
    ],
)
def test_script(world: World, case: Case) -> None:
    world.load(case.given)
    if isinstance(case.returns, type) and issubclass(case.returns, Exception):
        with pytest.raises(case.returns):
            case.call(world)
    else:
        assert case.call(world) == case.returns
    expected = {**case.given, **case.then}
    assert world.state() == {k: v for k, v in expected.items() if v is not None}
