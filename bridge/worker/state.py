"""Per-worker-process state: settings, the dead-letter office, Redis, and held retries.

Kafka producers and sockets must never cross a ``fork()``: each is created lazily in the
process that uses it and re-created when the pid changes (Celery's prefork pool forks its
children after importing the app).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from kombu import Connection, Producer

from bridge.backends.kafka.dead_letters import DeadLetterOffice, DeadLetterProducer
from bridge.backends.redis.client import broker_client
from bridge.backends.redis.dead_letter_store import DeadLetterStore
from bridge.backends.redis.messages import CapturedBatch
from bridge.backends.redis.ordering import KeyGate, KeyQueues
from bridge.credentials import mask_url
from bridge.errors import ConfigError
from bridge.record import Envelope
from bridge.settings import CONFIG_ENV, BridgeSettings, is_redis_url, load_settings
from bridge.worker import transport as worker_transport

T = TypeVar("T")
_lock = threading.RLock()
_settings: BridgeSettings | None = None
_per_process: dict[str, tuple[int, Any]] = {}


def settings() -> BridgeSettings:
    """The worker's settings, loaded once from ``BRIDGE_CONFIG``.

    :raises ConfigError: the configuration is missing or invalid.
    """
    global _settings
    if _settings is not None:  # every task asks: no lock once loaded
        return _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def _this_process(name: str, make: Callable[[], T]) -> T:
    with _lock:
        pid, value = _per_process.get(name, (None, None))
        if pid != os.getpid():
            value = make()
            _per_process[name] = (os.getpid(), value)
        return cast(T, value)


def dead_letter_producer() -> DeadLetterProducer:
    """This process's dead-letter producer, created on first use."""
    conf = settings()
    return _this_process("dlt", lambda: DeadLetterProducer(conf.kafka, conf.dead_letter))


def dead_letter_office(group_id: str) -> DeadLetterOffice:
    """This process's dead-letter office for ``group_id``, on its producer and Redis client."""
    return _this_process(
        f"dlt-office:{group_id}",
        lambda: DeadLetterOffice(dead_letter_producer(), DeadLetterStore(redis_client(), group_id)),
    )


def redis_client() -> redis.Redis:
    """This process's client of the Celery broker's Redis."""
    celery = settings().celery
    return _this_process("redis", lambda: broker_client(celery, socket_timeout=5))


def key_queues(group_id: str) -> KeyQueues:
    """This process's handle on the key FIFOs of ordered routes in ``group_id``."""
    return _this_process(f"keys:{group_id}", lambda: KeyQueues(redis_client(), group_id))


def key_gate(envelope: Envelope) -> KeyGate:
    """The gate of an ordered record's key."""
    rec = envelope.record
    queues = key_queues(envelope.group_id)
    fifo = queues.fifo(rec.topic, rec.key, rec.partition)
    return KeyGate(queues, fifo, rec.partition, envelope.task_id(), settings().stall_timeout_ms)


def held_message(publish: Callable[[Producer], object], app: Any) -> tuple[str, bytes]:
    """Run ``publish(producer)`` (e.g. ``signature.apply_async(producer=…)``) so that Celery and
    kombu build the message exactly as for a real publish, but keep it instead of sending it.

    :returns: the queue and the message, as kombu would ``LPUSH`` them.
    """

    def make_channel() -> Any:
        connection: Connection = app.connection_for_write()
        return connection.default_channel

    with _lock:
        channel = _this_process("hold-channel", make_channel)
        hold = CapturedBatch(channel)
        channel.create_publish_batch = lambda max_size: hold
        producer = Producer(channel)
        with producer.batch():  # type: ignore[attr-defined]  # kombu 5.7; stubs predate it
            publish(producer)
    return hold.lpush()


def start_problems(app: Any, handlers: list[str], others: list[str]) -> list[str]:
    """Why a worker of ``app`` must not start (empty: it may).

    :param handlers: the names of its ``RecordTask`` tasks; without any, and without a
        bridge configuration, it is not a bridge worker and nothing is checked.
    :param others: the names of its other tasks.
    """
    try:
        conf = settings()
    except ConfigError as exc:
        if not handlers:
            return []
        what = f"{exc}" if os.environ.get(CONFIG_ENV) else f"{CONFIG_ENV} is not set"
        return [
            f"{what}: a worker with RecordTask handlers ({', '.join(handlers)}) needs the "
            f"bridge's configuration file to retry and dead-letter their records; set "
            f"{CONFIG_ENV}=path/to/bridge.toml (the file the bridge runs with) and call "
            f"bridge.configure(app)"
        ]
    problems = unsafe_worker_config(app, conf) if handlers else []
    problems += [
        f"task {name}: acks_late is off: a worker that dies while it runs loses the record"
        for name in handlers
        if not app.tasks[name].acks_late
    ]
    return problems + misrouted(conf, others) + unbatched(conf, app, handlers)


def unbatched(conf: BridgeSettings, app: Any, handlers: list[str]) -> list[str]:
    """Batched routes of ``conf`` whose task this worker runs as a ``RecordTask`` of single
    records (``handlers``): it would reject their batches as foreign messages."""
    single = {name for name in handlers if not getattr(app.tasks[name], "takes_batches", False)}
    return [
        f"route {route.topic}: batch_size = {route.batch_size}, but task {route.task} is a "
        f"RecordTask of one record; declare it with @app.task(base=RecordBatchTask, ...) "
        f"and let it take a list of records"
        for route in conf.routes
        if route.batch_size > 1 and route.task in single
    ]


def misrouted(conf: BridgeSettings, others: list[str]) -> list[str]:
    """Routes of ``conf`` whose task this worker registers (``others``), but not as a
    ``RecordTask``: each of their records would reach the handler as a dict."""
    plain = set(others)
    return [
        f"route {route.topic}: task {route.task} is registered here but is not a RecordTask; "
        f"declare it with @app.task(base=RecordTask, ...)"
        for route in conf.routes
        if route.task in plain
    ]


def unsafe_worker_config(app: Any, conf: BridgeSettings) -> list[str]:
    """Why this Celery app's workers cannot keep the bridge's guarantees (empty: they can)."""
    problems = []
    broker = str(app.conf.broker_url or "")
    if not is_redis_url(broker):
        shown = mask_url(broker)
        problems.append(f"broker_url {shown!r}: delayed retries wait in Redis; use Redis")
    if not worker_transport.installed():
        problems.append(
            "broker transport: kombu's own Redis transport loses a message when a worker dies "
            "between fetch and acknowledgement; call bridge.configure(app), which installs the "
            "workers' transport (or bridge.worker.transport.install() in the configuration)"
        )
    accepted = set(app.conf.accept_content or ())
    if accepted - {"json", "application/json"}:
        problems.append(
            f"accept_content {sorted(accepted)}: records come from outside; accept JSON only "
            f"(bridge.configure(app) does)"
        )
    visibility_s = (app.conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    threshold_s = conf.retry.redis_schedule_min_delay_ms / 1000
    if visibility_s < 2 * threshold_s:
        problems.append(
            f"broker_transport_options visibility_timeout {visibility_s} s: retries shorter "
            f"than {threshold_s} s stay countdowns in workers and must stay below half of it "
            f"(bridge.configure(app) sets celery.visibility_timeout_s)"
        )
    return problems


def use_settings(conf: BridgeSettings) -> None:
    """Make ``conf`` this worker's settings (``bridge.configure(app, path)`` loaded them)."""
    global _settings
    with _lock:
        _settings = conf
