"""Example handlers for the ``orders`` topic (used by ``make demo``).

An order is JSON: ``{"id": "o-1", "amount": 10}``. To show the retry path, an order may ask to
fail: ``"fail_times": n`` raises ``TimeoutError`` on its first ``n`` attempts (retried with
exponential backoff), ``"invalid": true`` raises ``PermanentError`` (dead-lettered at once).
Each attempt and outcome is counted in Redis under ``demo:{group_id}:`` for the demo summary.
"""

from __future__ import annotations

from functools import cache

import redis

from bridge import PermanentError, Record, RecordTask
from bridge.worker.state import settings
from tasks import app


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings().celery.broker_url)


@app.task(
    base=RecordTask,
    bind=True,
    name="shop.handle_order",
    autoretry_for=(TimeoutError, ConnectionError),
    retry_backoff=1,
    retry_backoff_max=8,
    retry_jitter=False,
    max_retries=3,
)
def handle_order(self: RecordTask, record: Record) -> None:
    """Handle one order; fail on purpose when the order asks for it."""
    order = record.value
    stats = f"demo:{settings().kafka.group_id}"
    _redis().hincrby(f"{stats}:attempts", str(order["id"]), 1)
    if order.get("invalid"):
        raise PermanentError(f"order {order['id']} is invalid")
    if self.request.retries < int(order.get("fail_times", 0)):
        raise TimeoutError(f"payment service timed out for order {order['id']}")
    _redis().sadd(f"{stats}:handled", str(order["id"]))
