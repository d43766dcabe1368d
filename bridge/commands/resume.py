"""``python -m bridge resume``: ask every bridge of the group to resume routes paused by the
dead-letter flood breaker (:mod:`bridge.ops.resume`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.commands.routed import add_topic_option, refuse_unrouted
from bridge.settings import BridgeSettings


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``resume`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    resume = commands.add_parser(
        "resume", parents=[common], help="resume routes paused by the dead-letter flood breaker"
    )
    add_topic_option(resume)
    resume.set_defaults(func=_resume)


def _resume(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import redis

    from bridge.ops.resume import breaker_on, resume

    routed = [route.topic for route in settings.routes]
    topics = args.topic or routed
    if refuse_unrouted(args.topic, routed):
        return 2
    if not breaker_on(settings):
        print("kafka-celery-bridge: the flood breaker is off (breaker.dead_letter_ratio unset)")
        return 0
    try:
        resume(settings, topics)
    except redis.RedisError as exc:
        print(f"kafka-celery-bridge: Redis: {exc}", file=sys.stderr)
        return 1
    print(f"resume asked for {', '.join(topics)}: every bridge of group "
          f"{settings.kafka.group_id} resumes them within breaker.check_interval_ms")  # fmt: skip
    return 0
