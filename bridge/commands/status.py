"""``python -m bridge status``: what Kafka and Redis hold for the group, as tables or JSON
(:mod:`bridge.ops.status` reads it, :mod:`bridge.ops.status_view` draws it)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bridge.settings import BridgeSettings


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``status`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    status = commands.add_parser("status", parents=[common], help="committed offsets and lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)


def _status(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import sys

    import redis
    from kafka.errors import KafkaError

    from bridge.credentials import mask_url
    from bridge.ops.status import KafkaView, RedisView, kafka_view, redis_view, status_doc
    from bridge.ops.status_view import console_for, render
    from bridge.routing import Router

    errors: list[str] = []
    kafka: KafkaView | None = None
    held: RedisView | None = None
    try:
        kafka = kafka_view(settings)
    except KafkaError as exc:
        errors.append(f"Kafka unreachable: {exc!r}")
    try:
        held = redis_view(settings)
    except redis.RedisError as exc:
        errors.append(f"Redis unreachable at {mask_url(settings.celery.broker_url)}: {exc!r}")
    routes = Router.from_settings(settings).routes
    doc = status_doc(settings.kafka.group_id, routes, kafka, held, errors)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        render(doc, console_for(sys.stdout))
    return 1 if errors else 0
