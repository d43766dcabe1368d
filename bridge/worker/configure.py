"""``bridge.configure(app)``: what the workers of any Celery app need to run the bridge's
handlers, taken from the bridge's configuration file, in one call.

::

    app = Celery("shop")
    bridge.configure(app)  # BRIDGE_CONFIG, or configure(app, "path/to/bridge.toml")

It sets the broker (the bridge's), JSON only, acknowledgement after the task ran and on a lost
worker, the visibility timeout and transport options of ``[celery]``; installs the workers'
transport (processing lists); registers ``bridge.produce``; serves the workers' metrics when
``metrics.worker_port`` is set; and gives the workers' log lines the bridge's format
(``BRIDGE_LOG_FORMAT``) and redaction. What the app already says is kept unless it contradicts
the bridge: then it refuses, naming the setting, rather than run a worker that would lose or
misread records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from bridge.credentials import mask_url
from bridge.errors import ConfigError
from bridge.logs import format_from_env, hold_repeats, use_format
from bridge.redact import redact_handlers
from bridge.settings import CONFIG_ENV, BridgeSettings, load_settings
from bridge.worker import metrics, state, transport

JSON = ("json", "application/json")
# Celery's own defaults of the settings this module checks: a value equal to the default
# says nothing, so it cannot contradict the bridge.
_DEFAULT_VISIBILITY_S = 3600


def configure(app: Celery, config: str | os.PathLike[str] | None = None) -> None:
    """Make ``app``'s workers bridge workers.

    Without ``config`` and without ``BRIDGE_CONFIG`` there is nothing to apply yet: a process
    that only imports the app (to send tasks, or in tests) goes on, and a worker of it with
    ``RecordTask`` handlers is refused at start, naming ``BRIDGE_CONFIG``.

    :param config: the bridge's TOML file; ``None`` means ``BRIDGE_CONFIG``.
    :raises ConfigError: the bridge's file is missing or invalid, or ``app`` contradicts it
        (another broker, another serializer, another visibility timeout); nothing is applied.
    """
    if config is not None or os.environ.get(CONFIG_ENV):
        _apply(app, load_settings(config))
    metrics.install(app)
    _log_like_the_bridge(app)


def _apply(app: Celery, conf: BridgeSettings) -> None:
    problems = contradictions(app.conf, conf)
    if problems:
        raise ConfigError("bridge.configure(app): " + "; ".join(problems))
    state.use_settings(conf)
    app.conf.update(celery_settings(conf, app.conf.broker_transport_options or {}))
    transport.install()
    import bridge.worker.produce_task  # noqa: F401  # registers bridge.produce (a shared task)


def celery_settings(conf: BridgeSettings, options: Mapping[str, Any]) -> dict[str, Any]:
    """The Celery settings a bridge worker needs (pure).

    :param options: the app's own ``broker_transport_options``, kept under the bridge's.
    """
    return {
        "broker_url": conf.celery.broker_url,
        "broker_connection_retry_on_startup": True,
        # One Redis list per queue (no priority steps): a worker fetches with one blocking move.
        "broker_transport_options": {
            "priority_steps": [0],
            **options,
            **conf.celery.transport_options,
            **conf.celery.sentinel_options(),  # master_name, the Sentinels' password
            "visibility_timeout": conf.celery.visibility_timeout_s,
        },
        # Records come from outside: JSON only, never pickle.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Acknowledged after the task ran: a worker that dies mid-task loses nothing.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
    }


def contradictions(app_conf: Any, conf: BridgeSettings) -> list[str]:
    """What ``app_conf`` (a Celery app's ``conf``, read as Celery reads it: ``broker_url``
    from ``CELERY_BROKER_URL`` too) says against the bridge's ``conf``.

    Settings the app left at Celery's defaults contradict nothing.
    """
    problems = []
    broker = app_conf.broker_url
    if broker and broker != conf.celery.broker_url:
        problems.append(
            f"broker_url {mask_url(str(broker))!r} is not the bridge's "
            f"{mask_url(conf.celery.broker_url)!r} (celery.broker_url): the workers would "
            f"never see the bridge's tasks; leave broker_url unset"
        )
    for key in ("task_serializer", "result_serializer"):
        value = getattr(app_conf, key)
        if value and value not in JSON:
            problems.append(f"{key} {value!r}: records come from outside; the bridge uses JSON")
    for key in ("accept_content", "result_accept_content"):
        accepted = set(getattr(app_conf, key) or ())
        if accepted - set(JSON):
            problems.append(f"{key} {sorted(accepted)}: records come from outside; JSON only")
    options = app_conf.broker_transport_options or {}
    visibility_s = options.get("visibility_timeout", _DEFAULT_VISIBILITY_S)
    if visibility_s not in (_DEFAULT_VISIBILITY_S, conf.celery.visibility_timeout_s):
        problems.append(
            f"broker_transport_options visibility_timeout {visibility_s} s is not the bridge's "
            f"{conf.celery.visibility_timeout_s} s (celery.visibility_timeout_s); set it there"
        )
    return problems


def _log_like_the_bridge(app: Celery) -> None:
    def quiet_kafka(**_: Any) -> None:
        # kafka-python narrates every connection at INFO; keep its warnings and errors.
        logging.getLogger("kafka").setLevel(logging.WARNING)

    def log_format(logger: logging.Logger, **_: Any) -> None:
        if format_from_env() == "json":  # BRIDGE_LOG_FORMAT=json, as the bridge's --log-format
            use_format("json", logger)
        redact_handlers(state.settings(), logger)  # no configured password in any log line
        hold_repeats(logger)  # an outage is said once, then summarised

    uid = f"bridge-configure-{id(app)}"
    after_setup_logger.connect(quiet_kafka, weak=False, dispatch_uid=f"{uid}-kafka")
    after_setup_logger.connect(log_format, weak=False, dispatch_uid=f"{uid}-format")
    after_setup_task_logger.connect(log_format, weak=False, dispatch_uid=f"{uid}-task-format")
