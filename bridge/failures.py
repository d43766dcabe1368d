"""Failure classification (pure): is an exception worth retrying, and why a record is dead."""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum

from pydantic import ValidationError

from bridge.errors import PermanentError, UndecodableRecordError

# Retrying cannot fix these: the input itself is wrong.
NON_RETRYABLE_TYPES: tuple[type[BaseException], ...] = (
    PermanentError,
    ValidationError,
    json.JSONDecodeError,
    UnicodeDecodeError,
)


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (the ``bridge-reason`` header)."""

    EXHAUSTED = "exhausted"
    NON_RETRYABLE = "non-retryable"
    UNDECODABLE = "undecodable"
    UNROUTABLE = "unroutable"  # no worker had a RecordTask of its route's task name


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes and contexts (``__cause__``, then ``__context__``), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def is_non_retryable(exc: BaseException) -> bool:
    """True when ``exc`` or anything in its chain is of a type retrying cannot fix."""
    return any(isinstance(e, NON_RETRYABLE_TYPES) for e in chain(exc))


def reason_for(exc: BaseException, *, exhausted: bool) -> Reason:
    """The dead-letter reason of a task that ended with ``exc``.

    :param exhausted: the task used up its retries on this exception.
    """
    if any(isinstance(e, UndecodableRecordError) for e in chain(exc)):
        return Reason.UNDECODABLE
    return Reason.EXHAUSTED if exhausted else Reason.NON_RETRYABLE
