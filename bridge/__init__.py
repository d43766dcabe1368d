"""kafka-celery-bridge: Kafka records handed to Celery, with Celery's retries and Kafka DLTs.

Public API::

    from bridge import Record, RecordTask, PermanentError
    from bridge import produce, produce_async, Produced  # write records to Kafka
"""

from __future__ import annotations

from bridge.errors import (
    BridgeError,
    ConfigError,
    DeadLetterError,
    PermanentError,
    ProduceError,
    ProduceRefusedError,
    PublishError,
    UndecodableRecordError,
)
from bridge.producer import Produced, produce, produce_async
from bridge.record import Record
from bridge.settings import BridgeSettings, load_settings
from bridge.task import RecordTask

__version__ = "0.1.0"

__all__ = [
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
    "RecordTask",
    "UndecodableRecordError",
    "__version__",
    "load_settings",
    "produce",
    "produce_async",
]
