"""Celery configuration of the workers (``celery -A tasks worker``) and Flower.

The broker comes from the bridge's own configuration file (``BRIDGE_CONFIG``), so the bridge
and the workers cannot disagree about it.
"""

from bridge.settings import load_settings
from bridge.worker.transport import install as install_worker_transport

_settings = load_settings()

broker_url = _settings.celery.broker_url
broker_connection_retry_on_startup = True
# Shorter retries stay Celery countdowns, which the settings keep well below this; longer
# ones wait in Redis until due (bridge.backends.redis.schedule), so none outlives it inside a
# worker.
# One Redis list per queue (no priority steps): a worker then fetches with one blocking move.
broker_transport_options = {
    "priority_steps": [0],
    **_settings.celery.transport_options,
    "visibility_timeout": _settings.celery.visibility_timeout_s,
}

# Workers move what they fetch into a processing list (a worker killed before kombu records
# the message as unacknowledged loses nothing), and drop queue elements that are not kombu
# messages, where a stock worker stops.
install_worker_transport()

# Records come from outside: JSON only, never pickle.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Handlers report outcomes through Kafka (dead letters) and their own side effects.
task_ignore_result = True

# A task is acknowledged after it ran, so a worker that dies mid-task loses nothing.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 4

# Flower: workers send task events; publishers do not (task_send_sent_event costs ~40%).
worker_send_task_events = True
task_send_sent_event = False
