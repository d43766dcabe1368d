"""Exponential backoff delays (pure)."""

from __future__ import annotations


def exponential_ms(attempt: int, *, initial_ms: int, max_ms: int) -> int:
    """The delay before retry number ``attempt`` (1-based): ``initial_ms * 2**(attempt-1)``,
    capped at ``max_ms``.

    :raises ValueError: ``attempt`` is below 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return min(max_ms, initial_ms << min(attempt - 1, 62))
