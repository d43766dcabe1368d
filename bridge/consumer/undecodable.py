"""Records the bridge cannot decode: dead-lettered with what is known of them, and gone past.

Two kinds reach here:

- a record whose value its route cannot decode (:mod:`bridge.consumer.intake` sets it aside):
  dead-lettered whole just before its batch is enqueued (:meth:`UndecodableLetters.send_all`);
- a record batch kafka-python cannot decode at all (:mod:`bridge.consumer.batches`): once the
  batch in flight is accepted, each of its offsets is dead-lettered with its coordinates only
  (no key or headers, an empty value), accepted, and the partition goes on after it
  (:meth:`BadBatches.skip`).

Each dead letter (reason ``undecodable``, no attempts) goes through the dead-letter office's
:meth:`~bridge.backends.kafka.dead_letters.DeadLetterOffice.send`: written, or parked in Redis
when Kafka refuses it for good. One not written raises :class:`~bridge.errors.PublishError`:
the loop treats it as a failed enqueue (the broker's outage backoff pauses every partition) and
the record is fetched again. Each counts as a dead letter for its route's flood breaker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from kafka import KafkaConsumer

from bridge.backends.kafka.dead_letters import DeadLetterOffice, Fate
from bridge.backends.redis.outcomes import count as count_outcome
from bridge.consumer import batches
from bridge.consumer.assignment import Assignment
from bridge.consumer.pauses import Outage
from bridge.consumer.pipeline import Undecodable
from bridge.deadletter import DeadLetter, ErrorInfo, utc_now_iso
from bridge.errors import PublishError, UndecodableBatchError
from bridge.failures import Reason
from bridge.hooks import BridgeHooks
from bridge.logs import at
from bridge.offsets import Partition
from bridge.record import Record, TimestampType, task_id
from bridge.routing import Route, Router

log = logging.getLogger(__name__)


class UndecodableLetters:
    """Dead-letters the undecodable records of one bridge.

    :param group_id: the bridge's consumer group.
    :param router: the routes, by topic.
    :param office: writes the dead letters; parks those Kafka refuses for good.
    :param client: Redis, where the flood breakers' outcomes are counted.
    :param hooks: told of every dead letter.
    """

    def __init__(self, group_id: str, router: Router, office: DeadLetterOffice,
                 client: redis.Redis, hooks: BridgeHooks) -> None:  # fmt: skip
        self._group_id, self._router, self._office = group_id, router, office
        self._client, self._hooks = client, hooks

    def send_all(self, pending: Iterable[Undecodable]) -> None:
        """Dead-letter the records of a batch that their routes cannot decode, in order.

        :raises PublishError: one was not dead-lettered (nor any after it).
        """
        for u in pending:
            self.send(self._router.route_for(u.tp.topic), u.record, u.error)

    def send(self, route: Route, record: Record, exc: Exception) -> None:
        """Dead-letter ``record`` of ``route``, undecodable because of ``exc``.

        :raises PublishError: not written (its record is fetched again), or refused and not
            parked either.
        """
        dl = undecodable_letter(route, record, exc, self._group_id)
        self._post(dl, exc)
        if route.breaker_window_s is not None:
            count_outcome(self._client, self._group_id, record.topic, dead=True,
                          window_s=route.breaker_window_s, now_s=time.time())  # fmt: skip
        self._hooks.after_dead_letter(record.topic, str(Reason.UNDECODABLE), False)

    def _post(self, dl: DeadLetter, exc: Exception) -> None:
        """Write the dead letter of an undecodable record; one Kafka refuses for good (too
        large…) is parked in Redis (``status`` shows it, ``replay --parked`` writes it) rather
        than stall every partition retrying it.

        :raises PublishError: see :meth:`send`.
        """
        record = dl.record
        try:
            posted = self._office.send(dl)
        except redis.RedisError as err:  # only parking touches Redis
            raise PublishError(f"{record!r}: dead letter refused, not parked: {err!r}") from err
        except Exception as err:
            raise PublishError(f"undecodable {record!r} not dead-lettered: {err}") from err
        where = at(record, task_id=dl.task_id)
        if posted.fate is Fate.PARKED:
            log.critical("undecodable %r: Kafka refuses its dead letter, parked in Redis: %s",
                         record, posted.error, extra=where)  # fmt: skip
        else:
            log.warning("undecodable %r dead-lettered to %s: %s", record, dl.dlt_topic, exc,
                        extra=where)  # fmt: skip


def undecodable_letter(route: Route, record: Record, exc: Exception, group_id: str) -> DeadLetter:
    """The dead letter of ``record``, which ``route`` cannot decode because of ``exc`` (pure
    but for the clock: first failure and dead-lettering are now)."""
    now = utc_now_iso()
    return DeadLetter(
        record=record,
        group_id=group_id,
        dlt_topic=route.dlt_topic,
        reason=Reason.UNDECODABLE,
        error=ErrorInfo.of(exc),
        attempts=0,
        task=route.task,
        task_id=task_id(group_id, record.topic, record.partition, record.offset),
        first_failure_at=now,
        dead_lettered_at=now,
    )


def placeholder(topic: str, partition: int, offset: int, route: Route) -> Record:
    """What is known of a record of a batch that cannot be decoded: where it is. No key and an
    empty value (Kafka's producer needs one of them), no timestamp, no headers."""
    return Record(
        topic, partition, offset, -1, None, b"", (), route.value_format,
        timestamp_type=TimestampType.NO_TIMESTAMP_TYPE,
    )  # fmt: skip


class BadBatches:
    """Goes past the record batches kafka-python cannot decode, dead-lettering their records.

    :param letters: dead-letters each record.
    :param router: the routes, by topic.
    :param assignment: the bridge's partitions and accepted offsets, guarded by ``lock``.
    :param lock: the lock the bridge's loop shares with its rebalance listener.
    :param outage: the Celery broker's outage backoff: told of a dead letter not written.
    :param hooks: told of the offsets accepted.
    :param settle: waits for the batch in flight and accepts it (or rewinds).
    :param max_records: dead-letter at most this many offsets at a time (``max_poll_records``).
    """

    def __init__(self, letters: UndecodableLetters, router: Router, assignment: Assignment,
                 lock: threading.Lock, outage: Outage, hooks: BridgeHooks, *,
                 settle: Callable[[], None], max_records: int) -> None:  # fmt: skip
        self._letters, self._router = letters, router
        self._assignment, self._lock = assignment, lock
        self._outage, self._hooks = outage, hooks
        self._settle, self._max_records = settle, max_records

    def skip(self, consumer: KafkaConsumer, exc: Exception) -> None:
        """A record batch kafka-python cannot decode (see :mod:`bridge.consumer.batches`): once
        the batch in flight is accepted, dead-letter what is known of each of its records
        (their coordinates, the error; reason ``undecodable``) and go on after it. Otherwise
        (the partition was revoked, rewound, or the broker is down) it is fetched and fails
        again later.

        :param consumer: the Kafka consumer whose ``poll`` raised ``exc``.
        :raises Exception: ``exc``, when it was not raised decoding a batch.
        """
        bad = batches.find(exc)
        if bad is None:
            raise exc
        bad.discard()  # else kafka-python's next poll at this position never returns
        if not self._mine(bad.tp):
            return
        offset = consumer.position(bad.tp)
        self._settle()  # a failed or refused enqueue rewinds the partition before it
        if not self._mine(bad.tp) or self._outage.down or consumer.position(bad.tp) != offset:
            return  # records before it come again first; so will it
        skip = batches.offsets_to_skip(offset, bad, self._max_records)
        error = UndecodableBatchError(
            f"{bad.describe()}: Kafka's client cannot decode this record batch: {exc!r}"
        )
        error.__cause__ = exc
        log.error("%s: Kafka's client cannot decode the record batch (%r): dead-lettering "
                  "offsets %d..%d with their coordinates only", bad.describe(), exc, skip[0],
                  skip[-1], extra=at(topic=bad.tp.topic, partition=bad.tp.partition,
                                     offset=offset))  # fmt: skip
        self._dead_letter(consumer, bad.tp, skip, error)

    def _mine(self, tp: Any) -> bool:
        with self._lock:
            return tp in self._assignment

    def _dead_letter(
        self, consumer: KafkaConsumer, tp: Any, offsets: range, error: Exception
    ) -> None:
        """Dead-letter ``offsets`` of ``tp`` as undecodable, accept those written and go on
        after them; stop at the first write that fails (the broker's outage handling takes
        over, and the rest is fetched again once it is over)."""
        route = self._router.route_for(tp.topic)
        partition, done = Partition(tp.topic, tp.partition), offsets.start
        for offset in offsets:
            try:
                self._letters.send(route, placeholder(tp.topic, tp.partition, offset, route), error)
            except PublishError as err:
                self._outage.failed(err)  # paused; it is fetched again once resumed
                break
            with self._lock:
                self._assignment.accept(partition, offset)
            done = offset + 1
        if done > offsets.start:
            self._hooks.after_accept({partition: (offsets.start, done)})
            consumer.seek(tp, done)
