"""The ``--topic`` option of the commands that act on some routes (``resume``, ``topics``): one
definition of the option and of its refusal of a topic that is not routed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable


def add_topic_option(parser: argparse.ArgumentParser) -> None:
    """``--topic TOPIC``, repeatable; none given means every route."""
    parser.add_argument(
        "--topic", action="append", metavar="TOPIC",
        help="a routed topic (repeatable; default: every route)",
    )  # fmt: skip


def refuse_unrouted(asked: Iterable[str] | None, routed: Iterable[str]) -> bool:
    """Say on stderr which of the ``asked`` topics are not routed; whether any was."""
    unknown = sorted(set(asked or ()) - set(routed))
    if unknown:
        print(f"kafka-celery-bridge: --topic {', '.join(unknown)}: not a routed topic",
              file=sys.stderr)  # fmt: skip
    return bool(unknown)


def asked_topics(routed: Iterable[str], asked: list[str] | None) -> list[str] | None:
    """The topics a command acts on: those ``--topic`` named, else every routed one; ``None``
    (said on stderr) when one named is not routed."""
    names = list(routed)
    return None if refuse_unrouted(asked, names) else (asked or names)
