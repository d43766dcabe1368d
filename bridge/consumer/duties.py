"""The bridge's background duties: each a small class, run on a thread of its own
(:class:`~bridge.consumer.every.Every`: a failing round is logged and tried again after
a backoff, never allowed to end the thread).

=========================  ===================================================================
``delayed-retry mover``     :class:`RetryMover`: delayed retries that are due, to their queues,
                            and the due retries of batched routes, gathered into batches
                            (every ``retry.scheduler_interval_ms``)
``dead-letter writer``      :class:`DeadLetterWriter`: the dead letters waiting in Redis, to
                            Kafka, and their ordered keys on (every scheduler interval, 0.5 s
                            at least)
``ordered-key watchdog``    :class:`HeadRepublisher`: the heads of ordered keys not seen for
                            ``stall_timeout_ms``, published again (ordered routes only, every
                            ``ordering.watchdog_interval_ms``)
``queue consumer watch``    :class:`~bridge.consumer.queue_consumers.QueueWatch`: the warning
                            about routed queues no worker consumes (every 5 s)
=========================  ===================================================================

:class:`Duties` builds them from the bridge's settings; the bridge starts them with its loop and
stops them before it closes its consumer.

Each duty gets a Redis client of its own, closed when it stops. They shared the dispatcher's
before: that costs no connection less (a client's pool opens one per thread that uses it at
once), and ties a duty's connection trouble and its lifetime to the loop's enqueue. The
dead-letter writer shares the bridge's one dead-letter producer (thread-safe, one per process:
see :class:`~bridge.backends.kafka.send.RetryingSender`); the bridge closes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis

from bridge import keys
from bridge.backends.kafka.dead_letters import DeadLetterOffice, Fate, Posted, Writer
from bridge.backends.redis.client import broker_client
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.gathered_retries import BatchMessages, Gatherer
from bridge.backends.redis.ordering import KeyQueues, parked_why
from bridge.backends.redis.retries import Scheduler
from bridge.consumer.every import Every
from bridge.consumer.queue_consumers import CHECK_INTERVAL_S as WATCH_INTERVAL_S
from bridge.consumer.queue_consumers import QueueWatch
from bridge.deadletter import DeadLetter, ErrorInfo
from bridge.hooks import BridgeHooks
from bridge.logs import at
from bridge.routing import Route
from bridge.settings import BridgeSettings

log = logging.getLogger(__name__)

MOVE_BATCH = 1000  # retries moved per script call; a full batch means more may be due
WRITE_BATCH = 50  # pending dead letters written per round
WRITER_MIN_INTERVAL_S = 0.5


class RetryMover:
    """Moves delayed retries that are due from Redis to their queues, and gathers the due
    retries of batched routes into batch messages (atomic: each is moved once, however many
    bridges of the group move them)."""

    def __init__(
        self,
        scheduler: Scheduler,
        gatherer: Gatherer | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scheduler = scheduler
        self._gatherer = gatherer
        self._clock = clock

    def move_due(self) -> None:
        """Move every retry due by now.

        :raises redis.RedisError: Redis is unreachable.
        :raises PublishError: a batch's message could not be built.
        """
        while self._scheduler.move_due(int(self._clock() * 1000), limit=MOVE_BATCH) == MOVE_BATCH:
            pass  # more are due: keep moving
        if self._gatherer is not None:
            while self._gatherer.move_due(int(self._clock() * 1000), MOVE_BATCH) == MOVE_BATCH:
                pass


class DeadLetterWriter:
    """Writes the dead letters waiting in Redis (those a worker could not write while Kafka was
    down, and unroutable records) through the dead-letter office, and moves their ordered keys
    on: the key goes on once its head's dead letter is written, and parks
    (``dead-letter-refused``) if Kafka refuses it for good. A failed write ends the round:
    Kafka is in trouble, the others wait too (each pending letter backs off on its own).

    :param pending: the store the office defers to (the pending dead letters are read there).
    :param stall_timeout_ms: how long a key's next head may go unseen before it is republished.
    """

    def __init__(
        self,
        office: DeadLetterOffice,
        pending: DeadLetterStore,
        key_queues: KeyQueues,
        hooks: BridgeHooks,
        stall_timeout_ms: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._office = office
        self._pending = pending
        self._keys = key_queues
        self._hooks = hooks
        self._stall_timeout_ms = stall_timeout_ms
        self._clock = clock

    def write_due(self) -> None:
        """Write the pending dead letters whose attempt is due (:data:`WRITE_BATCH` at most).

        :raises redis.RedisError: Redis is unreachable.
        """
        for data in self._pending.due(int(self._clock() * 1000), limit=WRITE_BATCH):
            posted = self._office.resend(data)
            if posted.fate is Fate.DEFERRED:
                self._deferred(posted)
                return  # Kafka is in trouble: the others wait too
            if posted.fate is Fate.PARKED:
                self._parked(posted)
            else:
                self._written(posted)

    def _written(self, posted: Posted) -> None:
        dl = posted.letter
        log.warning("%r: pending dead letter (%s) written to %s, task %s",
                    dl.record, dl.reason, dl.dlt_topic, dl.task_id,
                    extra=at(dl.record, task_id=dl.task_id))  # fmt: skip
        self._hooks.after_dead_letter(dl.record.topic, str(dl.reason), True)
        if dl.ordered:
            deadline_ms = int(self._clock() * 1000) + self._stall_timeout_ms
            self._keys.done(self._fifo_of(dl), dl.record.partition, dl.task_id, deadline_ms)

    def _parked(self, posted: Posted) -> None:
        dl, error = posted.letter, posted.error
        assert error is not None
        log.critical("%r: Kafka refuses its dead letter, parked: %s", dl.record, error,
                     extra=at(dl.record, task_id=dl.task_id))  # fmt: skip
        if dl.ordered:
            why = parked_why(dl.task_id, "dead-letter-refused", ErrorInfo.of(error).to_dict(),
                             dl.attempts)  # fmt: skip
            self._keys.park(self._fifo_of(dl), dl.task_id, why)

    def _deferred(self, posted: Posted) -> None:
        dl = posted.letter
        log.error("%r: dead letter still not written (attempt %d), next in %d ms: %s",
                  dl.record, posted.write_attempts, posted.retry_in_ms, posted.error,
                  extra=at(dl.record, task_id=dl.task_id))  # fmt: skip

    def _fifo_of(self, dl: DeadLetter) -> str:
        rec = dl.record
        return self._keys.fifo(rec.topic, rec.key, rec.partition)


class HeadRepublisher:
    """Publishes again the head of an ordered key that no worker has shown a sign of for
    ``stall_timeout_ms`` (its task message was lost, say with a worker's Redis)."""

    def __init__(
        self,
        key_queues: KeyQueues,
        stall_timeout_ms: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = key_queues
        self._stall_timeout_ms = stall_timeout_ms
        self._clock = clock

    def republish_stalled(self) -> None:
        """Republish the stalled heads, and give each a new deadline.

        :raises redis.RedisError: Redis is unreachable.
        """
        now_ms = int(self._clock() * 1000)
        stalled = self._keys.republish_stalled(now_ms, now_ms + self._stall_timeout_ms)
        for fifo in stalled:
            log.warning("ordered key %s: no sign of its head for %d ms, published it again",
                        fifo, self._stall_timeout_ms,
                        extra=at(topic=keys.ordered_key_of(fifo)[0]))  # fmt: skip


class Duties:
    """The bridge's background duties (see the module), each on its thread and Redis client.

    :param producer: the bridge's dead-letter producer (the bridge closes it).
    :param hooks: told of each pending dead letter written.
    """

    def __init__(
        self,
        settings: BridgeSettings,
        routes: Sequence[Route],
        producer: Writer,
        hooks: BridgeHooks,
    ) -> None:
        group_id, stall_ms = settings.kafka.group_id, settings.stall_timeout_ms
        interval_s = settings.retry.scheduler_interval_ms / 1000
        self._clients: list[redis.Redis] = []
        self._messages = BatchMessages(settings.celery, group_id)
        sizes = {route.topic: route.batch_size for route in routes}
        gatherer = Gatherer(self._client(settings), group_id, self._messages,
                            lambda topic: sizes.get(topic, 1))  # fmt: skip
        mover = RetryMover(Scheduler(self._client(settings), group_id), gatherer)
        client = self._client(settings)
        store = DeadLetterStore(client, group_id)
        writer = DeadLetterWriter(DeadLetterOffice(producer, store), store,
                                  KeyQueues(client, group_id), hooks, stall_ms)  # fmt: skip
        watch = QueueWatch(self._client(settings), routes, settings.celery.processing_lease_s)
        self._threads = [
            Every("delayed-retry mover", interval_s, mover.move_due),
            Every("dead-letter writer", max(interval_s, WRITER_MIN_INTERVAL_S), writer.write_due),
            Every("queue consumer watch", WATCH_INTERVAL_S, watch.check),
        ]
        if any(route.ordered for route in routes):
            republisher = HeadRepublisher(KeyQueues(self._client(settings), group_id), stall_ms)
            watch_s = settings.ordering.watchdog_interval_ms / 1000
            self._threads.append(
                Every("ordered-key watchdog", watch_s, republisher.republish_stalled)
            )

    def _client(self, settings: BridgeSettings) -> redis.Redis:
        client = broker_client(
            settings.celery, socket_timeout=5, socket_connect_timeout=5
        )  # the dispatcher's timeouts
        self._clients.append(client)
        return client

    @property
    def names(self) -> list[str]:
        """The names of the duties' threads, in the order they start."""
        return [thread.name for thread in self._threads]

    def start(self) -> None:
        """Start every duty's thread."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the duties after the round in hand, waiting at most ``timeout_s`` for each;
        then close their Redis clients."""
        for thread in self._threads:
            thread.stop(timeout_s=timeout_s)
        for client in self._clients:
            client.close()
        self._messages.close()
