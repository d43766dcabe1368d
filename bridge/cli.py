"""The command line: ``run``, ``status`` and ``release``. The only place that configures
logging."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from bridge.errors import ConfigError
from bridge.logs import LOG_FORMATS, format_from_env, use_format
from bridge.settings import BridgeSettings, load_settings

if TYPE_CHECKING:
    from bridge.hooks import BridgeHooks

log = logging.getLogger("bridge.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kafka-celery-bridge`` and ``python -m bridge``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        log_format = args.log_format or format_from_env()
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level)
    use_format(log_format)
    if args.log_level != "DEBUG":
        # kafka-python narrates every connection at INFO; keep its warnings and errors.
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    command: int = args.func(settings, args)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kafka-celery-bridge", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="the TOML file (default: $BRIDGE_CONFIG)")
    common.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    common.add_argument(
        "--log-format", choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line (default: $BRIDGE_LOG_FORMAT)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="consume and hand records to Celery")
    run.set_defaults(func=_run)
    status = commands.add_parser("status", parents=[common], help="committed offsets and lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)
    release = commands.add_parser(
        "release", parents=[common], help="let a parked key of an ordered route go on"
    )
    release.add_argument("--topic", required=True)
    which = release.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="the key, as UTF-8 text")
    which.add_argument("--key-b64", help="the key, base64-encoded (binary keys)")
    which.add_argument("--partition", type=int, help="the keyless records of this partition")
    release.add_argument(
        "--skip", action="store_true",
        help="dead-letter the parked head and go on with the next record (default: run it again)",
    )  # fmt: skip
    release.set_defaults(func=_release)
    return parser


class Stopper:
    """Signal handler: the first signal stops the bridge gracefully, a second exits at once.

    :param stop: asks the bridge to finish the batch in hand, commit and leave its group.
    :param exit_now: ends the process without any cleanup (default ``os._exit``); nothing that
        was not accepted has been committed, so nothing is lost.
    """

    def __init__(self, stop: Callable[[], None], exit_now: Callable[[int], None] = os._exit):
        self._stop = stop
        self._exit_now = exit_now
        self.signalled = False

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        if self.signalled:
            log.warning("signal %d again: exiting at once", signum)
            self._exit_now(128 + signum)
            return
        self.signalled = True
        log.info("signal %d: finishing the batch in hand, committing, leaving the group", signum)
        self._stop()


def _run(settings: BridgeSettings, args: argparse.Namespace) -> int:
    from bridge.consumer import Bridge

    bridge = Bridge(settings, hooks=_hooks(settings, args))
    stopper = Stopper(bridge.stop)
    signal.signal(signal.SIGTERM, stopper)
    signal.signal(signal.SIGINT, stopper)
    bridge.run()
    return 0


def _hooks(settings: BridgeSettings, args: argparse.Namespace) -> list[BridgeHooks]:
    """The observers of the bridge loop this run needs."""
    import redis

    from bridge.members import MemberReporter

    # Its own client with short timeouts: reporting must not hold the loop up.
    client = redis.Redis.from_url(
        settings.celery.broker_url, socket_connect_timeout=0.5, socket_timeout=0.5
    )
    hooks: list[BridgeHooks] = [MemberReporter(client, settings.kafka.group_id)]
    return hooks


def _status(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import redis
    from kafka.errors import KafkaError
    from rich.console import Console

    from bridge.routing import Router
    from bridge.status import KafkaView, RedisView, kafka_view, redis_view, status_doc
    from bridge.status_view import render

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
        errors.append(f"Redis unreachable: {exc!r}")
    routes = Router.from_settings(settings).routes
    doc = status_doc(settings.kafka.group_id, routes, kafka, held, errors)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        render(doc, Console())
    return 1 if errors else 0


def _release(settings: BridgeSettings, args: argparse.Namespace) -> int:
    from bridge.errors import BridgeError
    from bridge.release import release

    key = args.key.encode() if args.key is not None else None
    if args.key_b64 is not None:
        key = base64.b64decode(args.key_b64, validate=True)
    try:
        done = release(settings, args.topic, key, args.partition or 0, skip=args.skip)
    except BridgeError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 1
    action = "skipped" if done.skipped else "resumed"
    where = f" (dead letter {done.dead_letter})" if done.dead_letter else ""
    print(f"{done.fifo}: head {done.task_id} {action}{where}")
    return 0
