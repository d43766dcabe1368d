"""kafka-celery-bridge: Kafka records handed to Celery, with Celery's retries and Kafka DLTs.

Public API::

    from bridge import Record, RecordTask, PermanentError
    from bridge import RecordBatchTask, BatchFailed  # handlers of batches of records
    from bridge import configure  # bridge.configure(app): a Celery app's workers run handlers
    from bridge import produce, produce_async, Produced  # write records to Kafka

The names that need Celery or Kafka's client are imported on first use (PEP 562), so that
``python -m bridge`` takes its signal handlers before those imports (~0.7 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bridge.errors import (
    BatchFailed,
    BridgeError,
    ConfigError,
    DeadLetterError,
    PermanentError,
    ProduceError,
    ProduceRefusedError,
    PublishError,
    UndecodableRecordError,
)

if TYPE_CHECKING:
    from bridge.record import Record
    from bridge.settings import BridgeSettings, load_settings
    from bridge.worker.batch_task import RecordBatchTask
    from bridge.worker.configure import configure
    from bridge.worker.producer import Produced, produce, produce_async
    from bridge.worker.task import RecordTask

__version__ = "0.1.0"

_LAZY = {
    "BridgeSettings": "bridge.settings",
    "Produced": "bridge.worker.producer",
    "Record": "bridge.record",
    "RecordBatchTask": "bridge.worker.batch_task",
    "RecordTask": "bridge.worker.task",
    "configure": "bridge.worker.configure",
    "load_settings": "bridge.settings",
    "produce": "bridge.worker.producer",
    "produce_async": "bridge.worker.producer",
}

__all__ = [
    "BatchFailed",
    "BridgeError",
    "BridgeSettings",
    "ConfigError",
    "DeadLetterError",
    "PermanentError",
    "ProduceError",
    "ProduceRefusedError",
    "Produced",
    "PublishError",
    "Record",
    "RecordBatchTask",
    "RecordTask",
    "UndecodableRecordError",
    "__version__",
    "configure",
    "load_settings",
    "produce",
    "produce_async",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
