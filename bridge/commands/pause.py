"""``python -m bridge pause``: every bridge of the group stops consuming routes until
``resume`` (:mod:`bridge.ops.pause`)."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from typing import Any

from bridge.commands.routed import add_topic_option, asked_topics
from bridge.settings import BridgeSettings


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``pause`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    pause = commands.add_parser(
        "pause", parents=[common],
        help="stop consuming routes (every bridge of the group, within a second) until resume",
    )  # fmt: skip
    add_topic_option(pause)
    pause.add_argument("--reason", default="", help="why (shown by status and in the logs)")
    pause.set_defaults(func=_pause)


def _pause(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import redis

    from bridge.ops.pause import pause

    topics = asked_topics((route.topic for route in settings.routes), args.topic)
    if topics is None:
        return 2
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        paused = pause(settings, topics, by=who, why=args.reason)
    except redis.RedisError as exc:
        print(f"kafka-celery-bridge: Redis: {exc}", file=sys.stderr)
        return 1
    already = [t for t in topics if t not in paused]
    group = settings.kafka.group_id
    if paused:
        print(f"paused {', '.join(paused)}: every bridge of group {group} stops consuming them "
              f"within a second; tasks already queued go on. Resume with `python -m bridge "
              f"resume`")  # fmt: skip
    if already:
        print(f"already paused: {', '.join(already)}")
    return 0
