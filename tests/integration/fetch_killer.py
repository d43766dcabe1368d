"""The test handlers' Celery app, in a worker that SIGKILLs itself right after it has fetched a
message and before kombu records it as unacknowledged: the moment a crash of a stock kombu
worker loses the message in (it has already popped it). Fault injection, not a fake: the
worker, its transport and Redis are real."""

from __future__ import annotations

import os
import signal
from typing import Any

import tests.integration.handlers  # noqa: F401  (registers the test handlers)
from bridge.worker import transport as worker_transport
from tasks import app

__all__ = ["app"]


def _killed_before_recording(qos: worker_transport.QoS, message: Any, delivery_tag: str) -> None:
    if qos.channel.in_flight is not None:
        os.kill(os.getpid(), signal.SIGKILL)


worker_transport.QoS.append = _killed_before_recording  # type: ignore[method-assign,assignment]
