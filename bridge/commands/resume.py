"""``python -m bridge resume``: lift an operator's pause of routes, and ask every bridge of the
group to resume routes paused by the dead-letter flood breaker (:mod:`bridge.ops.resume`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.commands.routed import add_topic_option, asked_topics
from bridge.settings import BridgeSettings


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``resume`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    resume = commands.add_parser(
        "resume", parents=[common],
        help="resume routes paused by an operator (pause) or by the dead-letter flood breaker",
    )  # fmt: skip
    add_topic_option(resume)
    resume.set_defaults(func=_resume)


def _resume(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import redis

    from bridge.ops.resume import resume

    topics = asked_topics((route.topic for route in settings.routes), args.topic)
    if topics is None:
        return 2
    try:
        done = resume(settings, topics)
    except redis.RedisError as exc:
        print(f"kafka-celery-bridge: Redis: {exc}", file=sys.stderr)
        return 1
    group = settings.kafka.group_id
    if done.unpaused:
        print(f"pause lifted for {', '.join(done.unpaused)}: every bridge of group {group} "
              "consumes them again within a second")  # fmt: skip
    if done.breakers:
        print(f"resume asked for {', '.join(done.breakers)}: every bridge of group {group} "
              "closes their flood breakers within breaker.check_interval_ms")  # fmt: skip
    if not done.unpaused and not done.breakers:
        print(f"nothing to resume: {', '.join(topics)} not paused by an operator, and the flood "
              "breaker is off (breaker.dead_letter_ratio unset)")  # fmt: skip
    return 0
