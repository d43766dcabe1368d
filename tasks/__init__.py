"""The Celery app: ``celery -A tasks worker`` and ``celery -A tasks flower``."""

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger

app = Celery("tasks", include=["tasks.shop"])
app.config_from_object("celeryconfig")


@after_setup_logger.connect
def _quiet_kafka(**_: Any) -> None:
    # kafka-python narrates every connection at INFO; keep its warnings and errors.
    logging.getLogger("kafka").setLevel(logging.WARNING)


__all__ = ["app"]
