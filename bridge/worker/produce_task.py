"""The ``bridge.produce`` Celery task: any Celery app writes a record to Kafka by task name.

::

    app.send_task("bridge.produce", args=["orders", "text"],
                  kwargs={"key": {"b64": "AAE="}, "headers": [["source", "shop"]]})

Arguments travel as JSON (see :mod:`bridge.payload` for their forms). The worker writes the
record with its process's producer (``[produce]`` retries), and the task returns
``{"topic", "partition", "offset"}`` (kept only where the app has a result backend).

A refused record (:class:`ProduceRefusedError`: bad argument, too large, unknown topic, not
authorized) fails the task at once. A :class:`ProduceError` (retryable errors outlasted the
producer's own retries) retries the task with Celery's exponential backoff, 1 s doubling up
to 60 s with jitter, at most 5 times. A task retry writes anew, so across task retries the
write is at least once (a write whose acknowledgement was lost may be there twice).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from bridge import payload
from bridge.errors import ProduceError, ProduceRefusedError
from bridge.worker.producer import default_producer

TASK_NAME = "bridge.produce"


@shared_task(
    name=TASK_NAME,
    ignore_result=False,
    autoretry_for=(ProduceError,),
    dont_autoretry_for=(ProduceRefusedError,),
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def produce_task(topic: str, value: Any, key: Any = None, headers: Any = None) -> dict[str, Any]:
    """Write one record to ``topic``; arguments in their task forms (:mod:`bridge.payload`).

    :returns: ``{"topic", "partition", "offset"}``.
    :raises ProduceRefusedError: a bad argument, or Kafka refused the record for good.
    :raises ProduceError: retryable errors outlasted the retries (the task is retried).
    """
    try:
        value_bytes = payload.from_task_arg(value, what="value")
        key_bytes = payload.from_task_arg(key, what="key")
        header_pairs = payload.headers_from_task_arg(headers)
    except ValueError as exc:
        raise default_producer().refuse(topic, exc) from exc
    return default_producer().produce(topic, value_bytes, key_bytes, header_pairs).to_dict()
