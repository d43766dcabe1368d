"""``python -m bridge replay``: its flags made into a request (:mod:`bridge.ops.replay_plan`),
the run (:mod:`bridge.ops.replay`) with a progress bar, and its summary."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from bridge.commands.signals import Stopper
from bridge.failures import Reason
from bridge.settings import BridgeSettings

if TYPE_CHECKING:
    from bridge.ops.replay_plan import ReplayRequest, Summary


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``replay`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
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
