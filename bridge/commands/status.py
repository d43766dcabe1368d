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

    from bridge.ops.status import collect
    from bridge.ops.status_view import console_for, render

    doc = collect(settings)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        render(doc, console_for(sys.stdout))
    return 1 if doc["errors"] else 0
