"""The command line: ``run`` and ``status``. The only place that configures logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from bridge.errors import ConfigError
from bridge.settings import BridgeSettings, load_settings

log = logging.getLogger("bridge.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kafka-celery-bridge`` and ``python -m bridge``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="consume and hand records to Celery")
    run.set_defaults(func=_run)
    status = commands.add_parser("status", parents=[common], help="committed offsets and lag")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)
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

    bridge = Bridge(settings)
    stopper = Stopper(bridge.stop)
    signal.signal(signal.SIGTERM, stopper)
    signal.signal(signal.SIGINT, stopper)
    bridge.run()
    return 0


def _status(settings: BridgeSettings, args: argparse.Namespace) -> int:
    from bridge.status import partition_status, waiting

    rows = partition_status(settings)
    held = waiting(settings)
    if args.json:
        doc = {
            "group_id": settings.kafka.group_id,
            "partitions": [r.to_dict() for r in rows],
            **held.to_dict(),
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"consumer group {settings.kafka.group_id}")
    print(f"{'topic':<32} {'partition':>9} {'committed':>10} {'end':>10} {'lag':>8}")
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        print(f"{r.topic:<32} {r.partition:>9} {committed:>10} {r.end:>10} {r.lag:>8}")
    print(f"delayed retries waiting in Redis: {held.delayed_retries}")
    print(
        f"dead letters not in Kafka yet: {held.dead_letters_pending} pending, "
        f"{held.dead_letters_parked} parked"
    )
    return 0
