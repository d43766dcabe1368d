"""``python -m bridge topics create``: create the routed topics that do not exist yet, then
every route's dead-letter topic (Kafka I/O). Topics that exist are left as they are."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.commands.routed import add_topic_option, refuse_unrouted
from bridge.settings import BridgeSettings

BROKER_DEFAULT = (
    -1
)  # Kafka's CreateTopics: the broker's num.partitions / default.replication.factor


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``topics`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    topics = commands.add_parser(
        "topics", parents=[common], help="create the routed topics and their dead-letter topics"
    )
    topics.add_argument("action", choices=["create"], help="create: the topics that do not exist")
    topics.add_argument(
        "--partitions", type=int, default=BROKER_DEFAULT, metavar="N",
        help="partitions of each routed topic created (default: the broker's num.partitions)",
    )  # fmt: skip
    topics.add_argument(
        "--replication-factor", type=int, default=BROKER_DEFAULT, metavar="N",
        help="replicas of each topic created (default: the broker's default.replication.factor)",
    )  # fmt: skip
    add_topic_option(topics)
    topics.set_defaults(func=_topics)


def _topics(settings: BridgeSettings, args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from bridge.backends.kafka.topics import admin_client, create_routed_topics
    from bridge.routing import Router

    routed = Router.from_settings(settings).routes
    routes = [r for r in routed if not args.topic or r.topic in args.topic]
    if refuse_unrouted(args.topic, [r.topic for r in routed]):
        return 2
    if args.partitions == 0 or args.partitions < BROKER_DEFAULT:
        print("kafka-celery-bridge: --partitions must be at least 1", file=sys.stderr)
        return 2
    try:
        admin = admin_client(settings.kafka)
        try:
            report = create_routed_topics(admin, routes, args.partitions, args.replication_factor)
        finally:
            admin.close()
    except KafkaError as exc:
        print(f"kafka-celery-bridge: Kafka: {exc}", file=sys.stderr)
        return 1
    for name, (created, partitions) in sorted(report.items()):
        print(f"{name}: {'created' if created else 'exists'}, {partitions} partitions")
    return 0
