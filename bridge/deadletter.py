"""Dead-letter records: the model, its JSON form and the DLT headers (pure; the dead-letter
office, :mod:`bridge.backends.kafka.dead_letters`, writes them).

Headers follow Spring Kafka's ``DeadLetterPublishingRecoverer`` (3.x, 4.x): every header it
writes for a listener failure, with its names and encodings, so tools built for Spring's DLTs
read ours: partition as a 4-byte big-endian int, offset and timestamp as 8-byte big-endian
longs, everything else UTF-8. Our own headers are prefixed ``bridge-``.

Meanings follow Spring's too. Spring wraps what the listener threw in its own
``ListenerExecutionFailedException``; ``kafka_dlt-exception-cause-fqcn`` names what it finds
by unwrapping its wrappers (``ErrorHandlingUtils.findRootCause``): the listener's own exception,
never that exception's cause. The bridge wraps nothing, so both ``-fqcn`` headers name the class
the handler raised, and the message is its message; the chain of causes is in the stack trace.

A record that comes with dead-letter headers already (a dead letter fed back to a topic) is
treated as Spring treats it by default: the earlier failure's headers are dropped
(``stripPreviousExceptionHeaders``) and the ``kafka_dlt-original-*`` headers are appended after
the earlier ones (``appendOriginalHeaders``), so the last value of each is this failure's.
"""

from __future__ import annotations

import struct
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.failures import Reason
from bridge.record import Envelope, Record, from_task_arg, to_task_arg


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Everything a dead-letter record says about why its record died."""

    record: Record
    group_id: str
    dlt_topic: str
    reason: Reason
    error: ErrorInfo
    attempts: int
    task: str
    task_id: str
    first_failure_at: str
    dead_lettered_at: str
    ordered: bool = False  # its key waits until it is written


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The exception that killed a record, as text (it may travel through a task message)."""

    fqcn: str
    message: str
    stacktrace: str

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        """Describe ``exc``: class name, message and formatted traceback (with its causes)."""
        return cls(
            fqcn=fqcn(exc),
            message=str(exc),
            stacktrace="".join(traceback.format_exception(exc)),
        )

    def to_dict(self) -> dict[str, str]:
        """JSON-safe form."""
        return {"fqcn": self.fqcn, "message": self.message, "stacktrace": self.stacktrace}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        """Inverse of :meth:`to_dict` (the ``cause_fqcn`` that older versions wrote is not used:
        see the module docstring)."""
        return cls(data["fqcn"], data["message"], data["stacktrace"])


def to_dict(dl: DeadLetter, *, write_attempts: int = 0) -> dict[str, Any]:
    """A JSON-safe form of a dead letter (record bytes base64-encoded), for Redis."""
    on_exhausted = "dead-letter" if dl.ordered else None
    envelope = Envelope(dl.record, dl.group_id, dl.dlt_topic, on_exhausted=on_exhausted)
    return {
        "envelope": to_task_arg(envelope),
        "reason": str(dl.reason),
        "error": dl.error.to_dict(),
        "attempts": dl.attempts,
        "task": dl.task,
        "task_id": dl.task_id,
        "first_failure_at": dl.first_failure_at,
        "dead_lettered_at": dl.dead_lettered_at,
        "write_attempts": write_attempts,
    }


def from_dict(data: dict[str, Any]) -> DeadLetter:
    """Inverse of :func:`to_dict`."""
    envelope = from_task_arg(data["envelope"])
    return DeadLetter(
        record=envelope.record,
        group_id=envelope.group_id,
        dlt_topic=envelope.dlt_topic,
        reason=Reason(data["reason"]),
        error=ErrorInfo.from_dict(data["error"]),
        attempts=int(data["attempts"]),
        task=data["task"],
        task_id=data["task_id"],
        first_failure_at=data["first_failure_at"],
        dead_lettered_at=data["dead_lettered_at"],
        ordered=envelope.ordered,
    )


def utc_now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds, e.g. ``2026-11-22T12:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC, e.g. ``2026-11-22T12:00:00.000Z``."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fqcn(exc: BaseException) -> str:
    """The exception's fully qualified class name, e.g. ``builtins.TimeoutError``."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


FAILURE_HEADERS = frozenset(
    {
        "kafka_dlt-exception-fqcn",
        "kafka_dlt-exception-cause-fqcn",
        "kafka_dlt-exception-message",
        "kafka_dlt-exception-stacktrace",
        "bridge-reason",
        "bridge-attempts",
        "bridge-task",
        "bridge-task-id",
        "bridge-first-failure-at",
        "bridge-dead-lettered-at",
    }
)
"""The headers that describe one failure: a new dead letter replaces them (Spring's
``stripPreviousExceptionHeaders``), where the ``kafka_dlt-original-*`` headers, which say where
the record was, are appended (``appendOriginalHeaders``). ``bridge-replays`` is kept: replay
counts with it."""


def dead_letter_headers(dl: DeadLetter) -> list[tuple[str, bytes | None]]:
    """The record's original headers, byte-exact and in order, less those of an earlier failure
    (:data:`FAILURE_HEADERS`), followed by the dead-letter headers, starting with
    ``kafka_dlt-original-topic`` (replay relies on it)."""
    rec = dl.record
    added: list[tuple[str, bytes | None]] = [
        ("kafka_dlt-original-topic", rec.topic.encode()),
        ("kafka_dlt-original-consumer-group", dl.group_id.encode()),
        ("kafka_dlt-original-partition", struct.pack(">i", rec.partition)),
        ("kafka_dlt-original-offset", struct.pack(">q", rec.offset)),
        ("kafka_dlt-original-timestamp", struct.pack(">q", rec.timestamp_ms)),
        ("kafka_dlt-original-timestamp-type", str(rec.timestamp_type).encode()),
        ("kafka_dlt-exception-fqcn", dl.error.fqcn.encode()),
        ("kafka_dlt-exception-cause-fqcn", dl.error.fqcn.encode()),
        ("kafka_dlt-exception-message", _utf8(dl.error.message)),
        ("kafka_dlt-exception-stacktrace", _utf8(dl.error.stacktrace)),
        ("bridge-reason", str(dl.reason).encode()),
        ("bridge-attempts", str(dl.attempts).encode()),
        ("bridge-task", dl.task.encode()),
        ("bridge-task-id", dl.task_id.encode()),
        ("bridge-first-failure-at", dl.first_failure_at.encode()),
        ("bridge-dead-lettered-at", dl.dead_lettered_at.encode()),
    ]
    kept = [(name, value) for name, value in rec.headers if name not in FAILURE_HEADERS]
    return kept + added


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (an exception message may hold one, e.g. from bytes
    decoded with ``surrogateescape``) is written as its ``\\udcxx`` escape, not an error."""
    return text.encode("utf-8", "backslashreplace")
