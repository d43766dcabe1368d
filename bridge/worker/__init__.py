"""Inside Celery workers: ``RecordTask``, the worker's state, transport, consumer step, metrics.

``bridge.worker.settings`` (now :func:`bridge.worker.state.settings`) keeps its name for the
apps that import it; it is looked up on first use, so importing a submodule stays light.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "settings":
        from bridge.worker.state import settings

        return settings
    raise AttributeError(f"module 'bridge.worker' has no attribute {name!r}")
