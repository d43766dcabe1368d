"""The bridge's exception tree: everything it raises derives from :class:`BridgeError`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """Raised at start when the configuration is missing or invalid; the message names the key."""


class PermanentError(BridgeError):
    """Raised by a handler when retrying cannot help: the record is dead-lettered at once."""


class BatchFailed(BridgeError):
    """Raised by a batch handler (``RecordBatchTask``) to name the records of its batch that
    failed, each with its exception; the others succeeded. Each failed record then goes on on
    its own, as a single record whose handler raised that exception.

    :param failures: ``{record: exception}``, or ``(record, exception)`` pairs; a record is
        matched to its batch by its topic, partition and offset.
    """

    def __init__(
        self, failures: Mapping[Any, BaseException] | Iterable[tuple[Any, BaseException]]
    ) -> None:
        pairs = tuple(failures.items() if isinstance(failures, Mapping) else failures)
        super().__init__(f"{len(pairs)} record(s) of the batch failed")
        self.failures: tuple[tuple[Any, BaseException], ...] = pairs


class UndecodableRecordError(PermanentError):
    """Raised when a record's value cannot be decoded with its route's ``value_format``."""


class UnroutableError(BridgeError):
    """The error a dead letter names when its record reached a worker that has no
    ``RecordTask`` of its route's task name (not registered, or not built on ``RecordTask``)."""


class UndecodableBatchError(BridgeError):
    """Raised (into the dead letters of its records) when Kafka's client cannot decode a record
    batch: no library for its codec, an unknown codec, data that does not decompress, a CRC
    that does not match, or a record it cannot parse."""


class PublishError(BridgeError):
    """Raised when a record could not be handed to the Celery broker."""


class DeadLetterError(BridgeError):
    """Raised when a record could not be written to its dead-letter topic."""


class DeadLetterRefusedError(DeadLetterError):
    """Raised when Kafka refuses a dead letter for good (too large, not authorized, invalid)."""


class RetryNotScheduledError(BridgeError):
    """Raised when a delayed retry could not be stored in Redis (its message is requeued)."""


class NotParkedError(BridgeError):
    """Raised when releasing an ordered key that is not parked (or whose head changed)."""


class ReplayError(BridgeError):
    """Raised when a replay cannot start: a bad flag, an unknown route, a missing DLT."""


class ReplayStoppedError(ReplayError):
    """Raised when a replay stops on a failed write or enqueue (that batch is not committed)."""


class ProduceError(BridgeError):
    """Raised when ``bridge.produce`` gave up: retryable errors outlasted the retries."""


class ProduceRefusedError(ProduceError):
    """Raised when a record is refused for good (too large, unknown topic, denied, bad value)."""
