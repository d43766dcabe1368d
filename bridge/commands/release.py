"""``python -m bridge release``: let a parked key of an ordered route go on
(:mod:`bridge.ops.release`)."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from bridge.settings import BridgeSettings


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``release`` to ``commands`` (argparse's sub-parsers), with the ``common`` options."""
    release = commands.add_parser(
        "release", parents=[common], help="let a parked key of an ordered route go on"
    )
    release.add_argument("--topic", required=True, help="the ordered route's topic")
    which = release.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="the key, as UTF-8 text")
    which.add_argument("--key-b64", help="the key, base64-encoded (binary keys)")
    which.add_argument("--partition", type=int, help="the keyless records of this partition")
    release.add_argument(
        "--skip", action="store_true",
        help="dead-letter the parked head and go on with the next record (default: run it again)",
    )  # fmt: skip
    release.set_defaults(func=_release)


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
