"""The Celery app: ``celery -A tasks worker`` and ``celery -A tasks flower``."""

import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from bridge.logs import format_from_env, hold_repeats, use_format
from bridge.redact import redact_handlers
from bridge.worker.metrics import install as install_worker_metrics
from bridge.worker.state import settings

# bridge.worker.produce_task: the "bridge.produce" task, so any app can write to Kafka by name.
app = Celery("tasks", include=["tasks.shop", "bridge.worker.produce_task"])
app.config_from_object("celeryconfig")
# /metrics of the workers, when the configuration sets metrics.worker_port.
install_worker_metrics(app)


@after_setup_logger.connect
def _quiet_kafka(**_: Any) -> None:
    # kafka-python narrates every connection at INFO; keep its warnings and errors.
    logging.getLogger("kafka").setLevel(logging.WARNING)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    # BRIDGE_LOG_FORMAT=json: one JSON object per line, as `python -m bridge --log-format json`.
    if format_from_env() == "json":
        use_format("json", logger)
    redact_handlers(settings(), logger)  # no configured password in any log line
    hold_repeats(logger)  # an outage is said once, then summarised


__all__ = ["app"]
