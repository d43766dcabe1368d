"""The workers' Redis transport: kombu's, with three changes.

**Nothing is lost between fetch and acknowledgement.** kombu pops a message with ``BRPOP`` and
records it as unacknowledged only afterwards; a worker SIGKILLed in between loses it, after the
bridge has committed its offset. Here a worker moves each element into its own processing list
and takes it out in the same transaction that records it as unacknowledged; lists of dead
workers go back to their queues (:mod:`bridge.backends.redis.fetch` has the design).

**Garbage is dropped.** A stock Celery worker on Redis stops with ``Unrecoverable error:
JSONDecodeError`` when anything pushes bytes that are not a JSON kombu message onto its queue
(celery/celery#1113): kombu decodes the element in the worker's event loop, outside any handler.
Such an element is not a task, so nothing can retry it: it is logged (its first bytes) and
dropped, and the worker goes on. Celery itself rejects well-formed messages it cannot run (an
unknown task name, a body that does not decode), and :class:`bridge.RecordTask` rejects task
arguments that are not record envelopes.

**A Redis restart does not stop a worker.** kombu 5.7 raises ``AttributeError`` when Celery
closes the channel of a lost connection (it has already dropped the connection's parameters)
and the channel restores or acknowledges messages; the worker stopped with "Unrecoverable
error". A channel here keeps the parameters it was opened with.

``celeryconfig.py`` calls :func:`install`: in the workers' (and Flower's) process, kombu's
``redis`` and ``rediss`` transport names stand for this one, and ``sentinel`` for
:class:`~bridge.worker.sentinel_transport.SentinelTransport` (the same changes on kombu's
Sentinel channel, which asks the Sentinels where the primary is). The broker URL keeps its
scheme, so Flower and ``celery inspect`` see a Redis broker as before. It reads two more transport
options: ``processing_lease_s`` (how long a channel's heartbeat may be missing before other
workers restore its processing lists) and ``multi_key_block_s`` (see
:mod:`bridge.backends.redis.fetch`).

**The heartbeat tells who consumes what.** ``_kombu.processing_index`` holds one entry per
channel and queue key it consumes (the processing list's name carries both), scored with the
channel's last heartbeat (every ``unacked_restore_interval``). A consumer cancelled on a queue
(``celery control cancel_consumer``) stops that queue's heartbeat. The bridge and ``status``
read it to find routed queues that no worker consumes (:mod:`bridge.consumer.queue_consumers`).

Differences from kombu's Redis transport, by design
----------------------------------------------------

``scripts/kombu_tests.sh`` runs kombu's own Redis transport tests against this module; each
test that fails here by design is listed, with its reason, in
``scripts/kombu_tests/expected_failures.txt``. The differences:

- **Fetch.** ``BLMOVE`` into a processing list, not ``BRPOP``. Several queue keys (several
  queues, or kombu's priority steps) are fetched by a non-blocking scan, then a block on one key
  at a time for ``multi_key_block_s``, instead of one ``BRPOP`` blocking on all keys: a fetch
  in flight may come back empty although a message arrived meanwhile (the next fetch takes it).
  The bridge's workers use one priority step (``celeryconfig.py``), so one key per queue.
- **Consumers without acknowledgement** (``no_ack``, e.g. the reply queues of ``celery
  inspect``) are at most once, as with kombu: a channel that consumes only such queues pops
  with kombu's ``BRPOP``; in a channel that also consumes queues with acknowledgements, such a
  message leaves its processing list (``LREM`` on the connection that fetched it) before its
  callback runs.
- **The periodic restore** (``restore_visible``) also refreshes this channel's heartbeat and
  restores the processing lists of dead channels (a ``ZRANGE`` of the index, at most every
  ``unacked_restore_interval / 2`` s, besides kombu's own calls).
- **``global_keyprefix`` is refused** (``ConfigError`` when a channel opens): the fetch, the
  processing lists and the bridge's own keys are unprefixed.
- **Garbage is dropped** (see above) where kombu stops the worker.
- **Sentinel** (``sentinel://``): the same, on kombu's Sentinel channel.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from queue import Empty
from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.imports import symbol_by_name
from kombu.utils.json import dumps, loads

from bridge.backends.redis.fetch import PROCESSING_INDEX, RESTORE, Fetcher, source_of
from bridge.errors import ConfigError
from bridge.settings import LEASE_S

log = logging.getLogger(__name__)

_SHOWN_CHARS = 200  # of a dropped element, in the log line
_SWEEP_LIMIT = 100  # processing lists restored per sweep


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; recording a fetched message as unacknowledged also takes it out of
    the processing list, in one transaction, and the periodic restore keeps processing lists
    alive and restores those of dead channels."""

    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        in_flight = self.channel.in_flight
        if in_flight is None:
            super().append(message, delivery_tag)
            return
        processing, element = in_flight
        delivery = message.delivery_info
        unacked = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, unacked)
            pipe.lrem(processing, 1, element)
            pipe.execute()
        self.channel.in_flight = None
        virtual.QoS.append(self, message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self.channel.tend_processing_lists()
        super().restore_visible(start, num, interval)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, fetching with ``BLMOVE`` into processing lists
    (:mod:`bridge.backends.redis.fetch`); a queue element that does not decode as JSON is
    dropped; it can still reach Redis after its connection was collected."""

    QoS = QoS
    processing_lease_s: float = LEASE_S
    multi_key_block_s: float = 0.1
    from_transport_options = (
        *kombu_redis.Channel.from_transport_options,
        "processing_lease_s",
        "multi_key_block_s",
    )
    # kombu's, missing from its type stubs
    _queue_cycle: Any
    _q_for_pri: Any
    _flush_brpop_reauth: Any
    connection_errors: tuple[type[BaseException], ...]
    unacked_restore_interval: float

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        if connection.client.transport_options.get("global_keyprefix"):
            # Fetch, processing lists and the bridge's own keys are unprefixed (see above).
            raise ConfigError("broker_transport_options: global_keyprefix is not supported by "
                              "bridge.worker.transport")  # fmt: skip
        super().__init__(connection, *args, **kwargs)
        self._opened_with = {False: self._connparams(), True: self._connparams(asynchronous=True)}
        self._fetcher = Fetcher(token=uuid.uuid4().hex, block_s=self.multi_key_block_s)
        self._lists: set[str] = set()  # this channel's processing lists, in the index
        self._unsettled: set[str] = set()  # lists holding an element that was not delivered
        self._tended_at = float("-inf")  # monotonic: last heartbeat
        self._swept_at = float("-inf")  # monotonic: last look for dead channels' lists
        self._no_ack_queues: set[str] = set()  # consumed without acknowledgement
        #: (processing list, element) fetched and not yet recorded as unacknowledged
        self.in_flight: tuple[str, bytes] | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # On a connection lost to a Redis restart, Celery collects the kombu connection (which
        # forgets its parameters) and then closes the channel, which restores its
        # unacknowledged messages with a new client; a task that ends later acknowledges on it
        # too. kombu 5.7 then raises AttributeError ("Unrecoverable error": the worker stops).
        # Such a channel builds its clients from the parameters it was opened with.
        if self.connection.client is None and hasattr(self, "_opened_with"):
            return dict(self._opened_with[asynchronous])
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        # kombu keeps no_ack only in the consumer's callback; the fetch needs it per queue.
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super()._basic_cancel(consumer_tag)  # type: ignore[misc]  # not in kombu's stubs
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
            self._retire_lists(queue)
        return result

    def _retire_lists(self, queue: str) -> None:
        """Stop the heartbeat of ``queue``'s processing lists: the bridge then sees no consumer
        of it here, and once the lease is over any worker restores what they still hold (a
        fetch in flight may still land in one)."""
        keys = {self._q_for_pri(queue, pri) for pri in self.priority_steps}
        self._lists -= {self._fetcher.processing(key) for key in keys}

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        sources = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        keep = not self._no_ack_queues.issuperset(queues)  # else at most once, as kombu
        self._prepare_lists(sources if keep else [])
        wait_s = self.brpop_timeout if timeout is None else timeout
        command = self._fetcher.command(sources, wait_s or 0, keep=keep)
        self._in_poll = self.client.connection
        # kombu's health check compares this with its own clock (the same monotonic clock)
        self._brpop_sent_at = kombu_redis.monotonic()  # type: ignore[attr-defined]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, self._fetcher.command_name, **options
                )
            except self.connection_errors:
                self.client.connection.disconnect()  # as kombu: the next fetch reconnects
                raise
            fetched = self._fetcher.reply(reply)
            if fetched is None:
                raise Empty()
            self._deliver_fetched(*fetched)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _deliver_fetched(self, source: str, element: bytes) -> None:
        queue = source.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        if not self._fetcher.kept:  # popped, as kombu does
            self._deliver_element(element, queue)
            return
        processing = self._fetcher.processing(source)
        if queue in self._no_ack_queues:  # out of Redis before its callback runs, as kombu
            self._settle(processing, element)
            self._deliver_element(element, queue)
            return
        self.in_flight = (processing, element)
        try:
            self._deliver_element(element, queue)
        except BaseException:
            if self.in_flight is not None:  # not recorded: back to its queue before the next fetch
                self._unsettled.add(processing)
            self.in_flight = None
            raise
        if self.in_flight is not None:  # dropped: not a kombu message
            self.in_flight = None
            self._settle(processing, element)

    def _deliver_element(self, element: bytes, queue: str) -> None:
        try:
            message = loads(bytes_to_str(element))
        except ValueError as exc:  # JSONDecodeError: the element is not a kombu message
            log.error("dropped a queue element kombu cannot decode (not a kombu message) "
                      "from queue %s: %r", queue, exc)  # fmt: skip
            return
        self.connection._deliver(message, queue)

    def _settle(self, processing: str, element: bytes) -> None:
        """Take ``element`` out of ``processing`` on the connection that fetched it, which has
        just answered (a pooled one may be half-open). If that fails, the element goes back
        to its queue before the next fetch: it was not delivered."""
        connection = self.client.connection
        try:
            connection.send_command("LREM", processing, 1, element)
            self.client.parse_response(connection, "LREM")
        except self.connection_errors:
            connection.disconnect()
            self._unsettled.add(processing)
            raise

    def _prepare_lists(self, sources: Iterable[str]) -> None:
        """Index this channel's processing lists before anything can land in them, and put
        back what an undelivered fetch left in them."""
        lists = {self._fetcher.processing(source) for source in sources}
        if not lists <= self._lists:
            self._heartbeat(lists | self._lists)
        elif self._lists and time.monotonic() - self._tended_at > self.unacked_restore_interval:
            self._heartbeat(self._lists)
        for processing in list(self._unsettled):
            self._restore_list(processing, forget=False)
            self._unsettled.discard(processing)

    def tend_processing_lists(self) -> None:
        """Refresh this channel's heartbeat and restore the processing lists of channels whose
        heartbeat is older than ``processing_lease_s`` (dead workers). Called by kombu's
        periodic restore, and after every empty poll by consumers without an event loop."""
        if time.monotonic() - self._swept_at < self.unacked_restore_interval / 2:
            return
        self._swept_at = time.monotonic()
        if self._lists:
            self._heartbeat(self._lists)
        with self.conn_or_acquire() as client:
            stale = client.zrange(PROCESSING_INDEX, "-inf", time.time() - self.processing_lease_s,
                                  byscore=True, offset=0, num=_SWEEP_LIMIT)  # fmt: skip
        for processing in stale:
            name = bytes_to_str(processing)
            if name not in self._lists:
                self._restore_list(name, forget=True)

    def _heartbeat(self, lists: set[str]) -> None:
        with self.conn_or_acquire() as client:
            added = client.zadd(PROCESSING_INDEX, dict.fromkeys(lists, time.time()))
        if added > len(lists - self._lists):
            log.warning("this worker's processing lists had left the index: its event loop "
                        "stalled for more than processing_lease_s (%s s)",
                        self.processing_lease_s)  # fmt: skip
        self._lists |= lists
        self._tended_at = time.monotonic()

    def _restore_list(self, processing: str, *, forget: bool) -> None:
        try:
            source = source_of(processing)
        except ValueError:
            log.error("dropped %r from %s: not a processing list", processing, PROCESSING_INDEX)
            with self.conn_or_acquire() as client:
                client.zrem(PROCESSING_INDEX, processing)
            return
        with self.conn_or_acquire() as client:
            moved = client.eval(RESTORE, 3, processing, source, PROCESSING_INDEX, int(forget))
        if moved:
            log.warning("restored %d message(s) to the front of queue %s from %s: a worker "
                        "fetched them and stopped before it recorded them as unacknowledged",
                        moved, source, processing)  # fmt: skip

    def close(self) -> None:
        if not self.closed:
            self._closing = True
            if self._in_poll:  # its reply may hold an element in a processing list
                with contextlib.suppress(Empty):
                    self._brpop_read()
                self._in_poll = None  # read once: kombu's close would read it again
            self._release_lists()
        super().close()

    def _release_lists(self) -> None:
        """Put back what this channel's processing lists hold and leave the index. If Redis
        cannot be reached (kombu may close a channel whose connection is gone), the other
        workers restore them after the lease."""
        try:
            for processing in self._fetcher.named():  # retired ones too
                self._restore_list(processing, forget=True)
        except Exception as exc:  # a channel closes anyway; the lease is the backstop
            log.warning("left this worker's processing lists to the lease: %r", exc)
        self._lists.clear()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`; an element that is JSON but not a
    kombu message (no ``body`` or ``properties``) is dropped too."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str | None) -> None:
        problem = malformed(message)
        if problem is not None:
            shown = repr(message)[:_SHOWN_CHARS]
            log.error("dropped an element of queue %s that is not a kombu message (%s): %s",
                      queue, problem, shown)  # fmt: skip
            return
        super()._deliver(message, queue)


def malformed(message: Any) -> str | None:
    """What makes ``message`` (a decoded queue element) not a kombu message, or ``None``."""
    if not isinstance(message, dict):
        return f"a JSON {type(message).__name__}, not an object"
    properties = message.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "no properties.delivery_tag"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "properties.delivery_info is not an object"
    if not isinstance(message.get("body"), str):
        return "no body"
    if not isinstance(message.get("headers", {}), dict):
        return "headers is not an object"
    return None


def installed() -> bool:
    """Whether this process's ``redis``, ``rediss`` and ``sentinel`` transports are this
    module's (as kombu resolves them: its cache of resolved names included)."""
    return all(
        kombu_transport.get_transport_cls(scheme) is symbol_by_name(path)
        for scheme, path in _TRANSPORTS.items()
    )


def install() -> None:
    """Make kombu's ``redis`` and ``rediss`` transports :class:`Transport` and its
    ``sentinel`` transport :class:`~bridge.worker.sentinel_transport.SentinelTransport`, in
    this process. kombu caches a name
    once resolved (``kombu.transport._transport_cache``): a connection opened before this call
    would keep kombu's own transport for good, so the cached names go too."""
    cache = getattr(kombu_transport, "_transport_cache", {})
    for scheme, path in _TRANSPORTS.items():
        kombu_transport.TRANSPORT_ALIASES[scheme] = path
        cache.pop(scheme, None)


_TRANSPORTS = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": "bridge.worker.sentinel_transport:SentinelTransport",
}
