"""The failed attempts of one record, as the operator console shows them (pure: no Redis).

Celery keeps a task's last exception only, and Flower shows the last event's; the dead letter
carries the last exception too. So the worker notes each failed attempt of a record (its number,
when, where, what became of it, and the exception with its traceback) and Redis keeps the newest
of them per task id for a while (:mod:`bridge.backends.redis.attempts`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from bridge.deadletter import ErrorInfo

# Characters of a traceback kept per attempt: the end, where the exception is raised.
STACKTRACE_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt of a record's task.

    ``outcome``: ``retry`` (a retry is scheduled ``delay_s`` later), ``dead-lettered`` or
    ``parked`` (its ordered key waits for an operator).
    """

    number: int
    at: str
    worker: str
    outcome: str
    fqcn: str
    message: str
    stacktrace: str
    delay_s: float | None = None

    @classmethod
    def of(
        cls,
        number: int,
        at: str,
        worker: str,
        outcome: str,
        exc: BaseException,
        delay_s: float | None = None,
    ) -> Attempt:
        """Describe attempt ``number`` (1 = the first run), failed with ``exc``."""
        error = ErrorInfo.of(exc)
        trace = error.stacktrace
        if len(trace) > STACKTRACE_CHARS:
            trace = "…" + trace[-STACKTRACE_CHARS:]
        return cls(number, at, worker, outcome, error.fqcn, error.message, trace, delay_s)

    def to_json(self) -> str:
        """JSON text, as Redis keeps it."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Attempt | None:
        """Inverse of :meth:`to_json`; ``None`` for what is not an attempt (it is skipped)."""
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError):
            return None


def delay_of(when: object) -> float | None:
    """A Celery ``Retry``'s ``when`` as seconds, when it is a number."""
    return float(when) if isinstance(when, int | float) else None
