"""The workers' Redis transport: kombu's, except that a queue element that is not a kombu
message is logged and dropped instead of stopping the worker.

A stock Celery worker on Redis stops with ``Unrecoverable error: JSONDecodeError`` when anything
pushes bytes that are not a JSON kombu message onto its queue (celery/celery#1113): kombu
decodes the element in the worker's event loop, outside any handler. The element is already
popped (``BRPOP``) and is not a task, so nothing can retry it: it is logged (its first bytes)
and dropped, and the worker goes on. Celery itself rejects well-formed messages it cannot run
(an unknown task name, a body that does not decode), and :class:`bridge.RecordTask` rejects
task arguments that are not record envelopes.

``celeryconfig.py`` calls :func:`install`: in the workers' (and Flower's) process, kombu's
``redis`` and ``rediss`` transport names stand for this one. The broker URL keeps its scheme, so
Flower and ``celery inspect`` see a Redis broker as before.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_SHOWN_CHARS = 200  # of a dropped element, in the log line


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; a queue element that does not decode as JSON is dropped."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        except ValueError as exc:  # JSONDecodeError: the element kombu popped is not JSON
            log.error("dropped a queue element kombu cannot decode (not a kombu message): %r",
                      exc)  # fmt: skip
            return True


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`; an element that is JSON but not a
    kombu message (no ``body`` or ``properties``) is dropped too."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str | None) -> None:
        problem = malformed(message)
        if problem is not None:
            shown = repr(message)[:_SHOWN_CHARS]
            log.error("dropped an element of queue %s that is not a kombu message (%s): %s",
                      queue, problem, shown)  # fmt: skip
            return
        super()._deliver(message, queue)


def malformed(message: Any) -> str | None:
    """What makes ``message`` (a decoded queue element) not a kombu message, or ``None``."""
    if not isinstance(message, dict):
        return f"a JSON {type(message).__name__}, not an object"
    properties = message.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "no properties.delivery_tag"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "properties.delivery_info is not an object"
    if not isinstance(message.get("body"), str):
        return "no body"
    if not isinstance(message.get("headers", {}), dict):
        return "headers is not an object"
    return None


def install() -> None:
    """Make kombu's ``redis`` and ``rediss`` transports this one, in this process (kombu looks
    names up in its alias table each time it opens a connection)."""
    for scheme in ("redis", "rediss"):
        kombu_transport.TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
