"""The command line: ``run``, ``status``, ``release``, ``resume`` and ``replay``. The only place
that configures logging."""

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
from typing import TYPE_CHECKING, Any

from bridge.errors import ConfigError
from bridge.failures import Reason
from bridge.logs import LOG_FORMATS, format_from_env, hold_repeats, use_format
from bridge.redact import redact_handlers
from bridge.settings import BridgeSettings, load_settings

if TYPE_CHECKING:
    from bridge.hooks import BridgeHooks
    from bridge.ops.replay_plan import ReplayRequest, Summary

log = logging.getLogger("bridge.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``bridge.__main__`` calls it); returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        log_format = args.log_format or format_from_env()
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level)
    use_format(log_format)
    hold_repeats()  # an outage or a missing topic is said once, then summarised
    if args.log_level != "DEBUG":
        # kafka-python narrates every connection at INFO; keep its warnings and errors.
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    redact_handlers(settings)  # kafka-python at DEBUG prints what it sends, passwords too
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
    run.add_argument(
        "--metrics-port", type=_port, metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (0: off; default: metrics.port)",
    )  # fmt: skip
    run.add_argument(
        "--metrics-addr", metavar="ADDR",
        help="the address /metrics listens on (default: metrics.addr, 0.0.0.0: every interface)",
    )  # fmt: skip
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
    resume = commands.add_parser(
        "resume", parents=[common], help="resume routes paused by the dead-letter flood breaker"
    )
    resume.add_argument(
        "--topic", action="append", metavar="TOPIC",
        help="a routed topic (repeatable; default: every route)",
    )  # fmt: skip
    resume.set_defaults(func=_resume)
    _add_replay(commands, common)
    return parser


def _add_replay(commands: Any, common: argparse.ArgumentParser) -> None:
    replay = commands.add_parser("replay", parents=[common], help="redrive dead letters")
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--topic", help="a routed topic: replay its route's DLT")
    source.add_argument("--dlt-topic", help="the dead-letter topic to replay, by name")
    replay.add_argument(
        "--parked",
        action="store_true",
        help="redrive the dead letters parked in Redis instead of a DLT",
    )
    replay.add_argument(
        "--to",
        choices=["source", "task"],
        default="source",
        help="source: back to the original topic (default); task: straight "
        "into the route's Celery task",
    )
    replay.add_argument("--since", help="dead-lettered at or after (ISO 8601, default UTC)")
    replay.add_argument("--until", help="dead-lettered before (ISO 8601, default UTC)")
    replay.add_argument(
        "--reason",
        action="append",
        choices=[str(reason) for reason in Reason],
        help="bridge-reason (repeatable)",
    )
    replay.add_argument(
        "--exception",
        action="append",
        metavar="FQCN",
        help="exception class, qualified or not (repeatable)",
    )
    key = replay.add_mutually_exclusive_group()
    key.add_argument("--key", help="the record key, as UTF-8 text")
    key.add_argument("--key-b64", help="the record key, base64-encoded (binary keys)")
    replay.add_argument(
        "--max-replays",
        type=int,
        default=3,
        metavar="N",
        help="skip dead letters replayed N times already (default 3)",
    )
    replay.add_argument("--dry-run", action="store_true", help="list, change nothing")
    replay.add_argument(
        "--replay-group", help="consumer group of the replay's progress (default {group_id}.replay)"
    )
    replay.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the DLT's beginning, not where the last replay stopped",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable summary")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(func=_replay)


class Stopper:
    """Signal handler: the first signal stops the bridge gracefully, a second exits at once.

    :param stop: asks the bridge to finish the batch in hand, commit and leave its group;
        :meth:`aim` changes it (signals are caught before the bridge exists).
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

    def aim(self, stop: Callable[[], None]) -> None:
        """Stop with ``stop`` from now on; at once if a signal came already."""
        self._stop = stop
        if self.signalled:
            stop()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT with this stopper."""
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)


def _run(settings: BridgeSettings, args: argparse.Namespace) -> int:
    stopper = Stopper(lambda: None)  # a signal during start-up stops the bridge once it exists
    stopper.install()
    from bridge.consumer.loop import Bridge

    try:
        hooks = _hooks(settings, args)
    except ConfigError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    refused = _redis_refuses_credentials(settings)
    if refused:
        print(f"kafka-celery-bridge: {refused}", file=sys.stderr)
        return 2
    bridge = Bridge(settings, hooks=hooks)
    stopper.aim(bridge.stop)
    bridge.run()
    return 0


def _redis_refuses_credentials(settings: BridgeSettings) -> str | None:
    """Why Redis refuses the configured credentials; None when it accepts them, or when it
    cannot be asked (an outage the bridge waits out, unlike a wrong password)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from bridge.credentials import mask_url

    url = settings.celery.broker_url
    once = Retry(NoBackoff(), 0)  # a Redis that is down is the bridge's to wait for, not ours
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5, retry=once).ping()
    except redis.AuthenticationError as exc:  # the message never holds the password
        return f"celery.broker_url {mask_url(url)}: Redis refuses the credentials ({exc})"
    except redis.RedisError:
        return None
    return None


def _hooks(settings: BridgeSettings, args: argparse.Namespace) -> list[BridgeHooks]:
    """The observers of the bridge loop this run needs."""
    from bridge.consumer.members import member_reporter
    from bridge.consumer.route_watch import route_watch
    from bridge.routing import Router

    routes = Router.from_settings(settings).routes
    hooks: list[BridgeHooks] = [member_reporter(settings), route_watch(settings, routes)]
    port = settings.metrics.port if args.metrics_port is None else args.metrics_port
    if port:
        from bridge.consumer.metrics import start_bridge_metrics

        addr = args.metrics_addr or settings.metrics.addr
        hooks.append(start_bridge_metrics(settings, port, addr))
    return hooks


def _port(text: str) -> int:
    """An argparse type: a TCP port number (0 to 65535)."""
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def _status(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import redis
    from kafka.errors import KafkaError
    from rich.console import Console

    from bridge.credentials import mask_url
    from bridge.ops.status import KafkaView, RedisView, kafka_view, redis_view, status_doc
    from bridge.ops.status_view import render
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
        render(doc, Console())
    return 1 if errors else 0


def _release(settings: BridgeSettings, args: argparse.Namespace) -> int:
    from bridge.errors import BridgeError
    from bridge.ops.release import release

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


def _resume(settings: BridgeSettings, args: argparse.Namespace) -> int:
    import time

    import redis

    from bridge.backends.redis.outcomes import request_resume

    routed = [route.topic for route in settings.routes]
    topics = args.topic or routed
    unknown = sorted(set(topics) - set(routed))
    if unknown:
        print(f"kafka-celery-bridge: --topic {', '.join(unknown)}: not a routed topic",
              file=sys.stderr)  # fmt: skip
        return 2
    if settings.breaker.dead_letter_ratio is None:
        print("kafka-celery-bridge: the flood breaker is off (breaker.dead_letter_ratio unset)")
        return 0
    client = redis.Redis.from_url(settings.celery.broker_url, socket_timeout=5)
    try:
        request_resume(client, settings.kafka.group_id, topics, time.time())
    except redis.RedisError as exc:
        print(f"kafka-celery-bridge: Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"resume asked for {', '.join(topics)}: every bridge of group "
          f"{settings.kafka.group_id} resumes them within breaker.check_interval_ms")  # fmt: skip
    return 0


def _replay(settings: BridgeSettings, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from bridge.errors import BridgeError, ReplayError, ReplayStoppedError
    from bridge.ops.replay import Replayer

    try:
        request = _replay_request(settings, args)
        bar = Progress(console=Console(stderr=True), disable=args.no_progress
                       or not sys.stderr.isatty())  # fmt: skip
        with bar:
            replayer = Replayer(settings, request, _BarHook(bar))
            Stopper(replayer.stop).install()
            summary = replayer.run()
    except ReplayStoppedError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 1
    except ReplayError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"kafka-celery-bridge: {exc}", file=sys.stderr)
        return 1
    _print_replay(summary, args.json)
    return 0


def _replay_request(settings: BridgeSettings, args: argparse.Namespace) -> ReplayRequest:
    from bridge.errors import ReplayError
    from bridge.ops.replay_plan import ReplayRequest, build_filter, select_dlt
    from bridge.routing import Router

    if args.max_replays < 1:
        raise ReplayError(f"--max-replays: {args.max_replays} is not at least 1")
    router = Router.from_settings(settings)
    dlt = select_dlt(router, args.topic, args.dlt_topic, parked=args.parked, to=args.to)
    flt = build_filter(
        since=args.since, until=args.until, reasons=args.reason or (),
        exceptions=args.exception or (), key=args.key, key_b64=args.key_b64,
    )  # fmt: skip
    return ReplayRequest(
        dlt_topic=dlt, to=args.to, filter=flt, max_replays=args.max_replays,
        dry_run=args.dry_run, replay_group=args.replay_group,
        from_beginning=args.from_beginning, parked=args.parked,
    )  # fmt: skip


class _BarHook:
    """A rich progress bar (on stderr) as the replay's progress hook."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._task: Any = None

    def started(self, total: int) -> None:
        self._task = self._bar.add_task("replaying", total=total)

    def advanced(self, count: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, count)


def _print_replay(summary: Summary, as_json: bool) -> None:
    doc = summary.to_dict()
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    for line in summary.listed:
        print("would replay " + " ".join(f"{k}={v}" for k, v in line.items() if v is not None))
    done = "would be " if summary.dry_run else ""
    print(f"read {summary.read}, matched {summary.matched}, {done}replayed {summary.replayed}, "
          f"already replayed {summary.already_replayed}, skipped by filter "
          f"{summary.skipped_by_filter}, skipped by the replay limit {summary.skipped_by_limit}, "
          f"unreplayable {summary.unreplayable}, parked dead letters {done}redriven "
          f"{summary.parked_redriven}")  # fmt: skip
