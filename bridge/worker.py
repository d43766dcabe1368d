"""Per-worker-process state: the settings and the dead-letter producer.

Kafka producers own sockets and a background thread, so one must never cross a ``fork()``:
the producer is created lazily in the process that uses it and re-created when the pid changes
(Celery's prefork pool forks its children after importing the app).
"""

from __future__ import annotations

import os
import threading

from bridge.deadletter import DeadLetter, DeadLetterProducer
from bridge.settings import BridgeSettings, load_settings

_lock = threading.Lock()
_settings: BridgeSettings | None = None
_producer: DeadLetterProducer | None = None
_producer_pid: int | None = None


def settings() -> BridgeSettings:
    """The worker's settings, loaded once from ``BRIDGE_CONFIG``.

    :raises ConfigError: the configuration is missing or invalid.
    """
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def dead_letter_producer() -> DeadLetterProducer:
    """This process's dead-letter producer, created on first use."""
    global _producer, _producer_pid
    conf = settings()
    with _lock:
        if _producer is None or _producer_pid != os.getpid():
            _producer = DeadLetterProducer(conf.kafka, conf.dead_letter)
            _producer_pid = os.getpid()
        return _producer


def write_dead_letter(dl: DeadLetter) -> tuple[int, int]:
    """Write ``dl`` with this process's producer.

    :raises DeadLetterError: see :meth:`DeadLetterProducer.write`.
    """
    return dead_letter_producer().write(dl)
