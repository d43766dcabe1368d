"""Celery configuration of the demo workers (``celery -A tasks worker``) and Flower: what the
demo chooses. What every bridge worker needs (the bridge's broker, JSON only, acknowledgement
after the task, the visibility timeout, the workers' transport) ``bridge.configure(app)``
applies from the bridge's configuration file (``BRIDGE_CONFIG``): see tasks/__init__.py.
"""

# Handlers report outcomes through Kafka (dead letters) and their own side effects.
task_ignore_result = True
worker_prefetch_multiplier = 4

# Flower: workers send task events; publishers do not (task_send_sent_event costs ~40%).
worker_send_task_events = True
task_send_sent_event = False
