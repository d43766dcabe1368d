"""Dead letters of a known shape for the console's tests (unit and integration)."""

from __future__ import annotations

from bridge.deadletter import DeadLetter, ErrorInfo, dead_letter_headers
from bridge.failures import Reason
from bridge.record import Record

STACK = 'Traceback (most recent call last):\n  File "handlers.py", line 7, in handle\nboom\n'


def dead_letter(
    topic: str,
    offset: int,
    *,
    key: bytes | None = b"k",
    value: bytes | None = b'{"n": 1}',
    reason: Reason = Reason.EXHAUSTED,
    fqcn: str = "builtins.TimeoutError",
    message: str = "timed out",
    at: str = "2026-11-22T08:00:00.000Z",
    original_headers: tuple[tuple[str, bytes | None], ...] = (("trace", b"abc"),),
) -> DeadLetter:
    """A dead letter of ``topic``'s record at ``offset`` (partition 0), group ``shop``."""
    record = Record(topic, 0, offset, 1_795_000_000_000 + offset, key, value, original_headers)
    return DeadLetter(
        record=record, group_id="shop", dlt_topic=f"{topic}.shop.dlt", reason=reason,
        error=ErrorInfo(fqcn, message, STACK + message), attempts=3, task="shop.order",
        task_id=f"shop:{topic}:0:{offset}", first_failure_at=at, dead_lettered_at=at,
    )  # fmt: skip


def headers(dl: DeadLetter) -> list[tuple[str, bytes]]:
    """Its DLT headers (no null values)."""
    return [(name, value or b"") for name, value in dead_letter_headers(dl)]
