"""``python -m bridge`` and the ``kafka-celery-bridge`` script: the command line."""

from __future__ import annotations

import signal
from types import FrameType


def _quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    """Run the command line; returns the exit code.

    Until a command puts its own handlers in place, SIGINT and SIGTERM end the process
    quietly (nothing is consumed yet): no ``KeyboardInterrupt`` traceback from the imports.
    """
    signal.signal(signal.SIGINT, _quietly)
    signal.signal(signal.SIGTERM, _quietly)
    from bridge.cli import main as command

    return command()


if __name__ == "__main__":
    raise SystemExit(main())
