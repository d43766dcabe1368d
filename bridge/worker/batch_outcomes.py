"""A batch handler's verdict on each record of its batch (pure: no Celery, no Redis).

A batch handler succeeds for every record, raises :class:`~bridge.errors.BatchFailed` naming
the records that failed (each with its exception), or raises anything else, which fails every
record with that exception. Each failed record then goes on on its own: its failure is raised
again (:class:`Replay`) where the handler of a single record would have raised it, so that
Celery's autoretry and :class:`~bridge.worker.task.RecordTask` decide its fate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from bridge.errors import BatchFailed
from bridge.record import Record

Coordinates = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True, slots=True)
class Replay:
    """The failure of one record of a batch, to raise again as its own handler's (with the
    traceback it was raised with, which each raise would otherwise lengthen)."""

    exc: BaseException
    traceback: TracebackType | None

    @classmethod
    def of(cls, exc: BaseException) -> Replay:
        return cls(exc, exc.__traceback__)

    def throw(self) -> None:
        """Raise the record's exception."""
        raise self.exc.with_traceback(self.traceback)


def coordinates(record: Any) -> Coordinates | None:
    """Where a record named by a handler sits (``None``: it is not a record)."""
    try:
        return (record.topic, record.partition, record.offset)
    except AttributeError:
        return None


def run_batch(
    records: Sequence[Record],
    handler: Callable[[list[Record]], Any],
    passthrough: tuple[type[BaseException], ...] = (),
) -> tuple[dict[Coordinates, Replay], list[Any]]:
    """Run ``handler`` on ``records`` and read its verdict.

    :param passthrough: exceptions that are not failures of records (Celery's ``Ignore``,
        ``Reject``): raised as they are.
    :returns: the failed records' failures by coordinates, and what a ``BatchFailed`` named
        that is not a record of the batch (ignored). No records: the handler does not run.
    """
    if not records:
        return {}, []
    try:
        handler(list(records))
    except passthrough:
        raise
    except BatchFailed as failed:
        return named(records, failed)
    except Exception as exc:  # escaped the whole handler: every record failed with it
        replay = Replay.of(exc)
        return {(r.topic, r.partition, r.offset): replay for r in records}, []
    return {}, []


def named(
    records: Sequence[Record], failed: BatchFailed
) -> tuple[dict[Coordinates, Replay], list[Any]]:
    """The failures ``failed`` names among ``records``, and what it names that is not one."""
    mine = {(r.topic, r.partition, r.offset) for r in records}
    found: dict[Coordinates, Replay] = {}
    strangers: list[Any] = []
    for record, exc in failed.failures:
        where = coordinates(record)
        if where in mine and isinstance(exc, BaseException):
            found[where] = Replay.of(exc)
        else:
            strangers.append(record)
    return found, strangers


def failure_of(record: Record, failed: BatchFailed) -> BaseException | None:
    """The exception ``failed`` gives ``record`` (a batch of one), if it names it."""
    found, _ = named([record], failed)
    replay = found.get((record.topic, record.partition, record.offset))
    return None if replay is None else replay.exc
