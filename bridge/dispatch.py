"""Publishing records to Celery: the only module that sends task messages (Redis I/O)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from bridge.errors import PublishError
from bridge.record import Envelope, to_task_arg
from bridge.routing import Route
from bridge.settings import CelerySettings

log = logging.getLogger(__name__)

# kombu's own reconnect loop is kept short: the bridge backs off and retries by itself, while
# still polling Kafka so that it stays in its consumer group.
_PUBLISH_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.2,
}


def publisher_app(celery: CelerySettings) -> Celery:
    """A Celery app that only publishes: JSON messages, no result backend, no sent events."""
    app = Celery("kafka-celery-bridge", broker=celery.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
    )
    return app


class Dispatcher:
    """Turn envelopes into Celery task messages addressed by task *name*."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def publish(self, route: Route, envelope: Envelope) -> str:
        """Publish one record as a task on the route's queue.

        :returns: the task id (deterministic: ``{group_id}:{topic}:{partition}:{offset}``).
        :raises PublishError: the broker did not accept the message.
        """
        task_id = envelope.task_id()
        try:
            self._app.send_task(
                route.task,
                args=[to_task_arg(envelope)],
                task_id=task_id,
                queue=route.queue,
                argsrepr=repr(envelope.record),
                retry_policy=_PUBLISH_RETRY_POLICY,
            )
        except Exception as exc:  # kombu raises its own and redis-py's errors
            raise PublishError(f"task {task_id} not published to {route.queue}: {exc!r}") from exc
        return task_id

    def close(self) -> None:
        """Release the broker connections."""
        self._app.close()
