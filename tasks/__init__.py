"""The Celery app: ``celery -A tasks worker`` and ``celery -A tasks flower``."""

from celery import Celery

import bridge

app = Celery("tasks", include=["tasks.shop"])
app.config_from_object("celeryconfig")
# Everything a bridge worker needs, from BRIDGE_CONFIG: the broker, JSON only, late
# acknowledgement, the workers' transport, bridge.produce, metrics, log format and redaction.
bridge.configure(app)

__all__ = ["app"]
